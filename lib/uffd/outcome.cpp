// One place that turns a resolve ioctl's (rc, errno, count) into an Outcome.
//
// The kernel's protocol (fs/userfaultfd.c): when some bytes were resolved and
// then something stopped the walk, the ioctl fails with EAGAIN and the count
// field holds the bytes done — a partial result, not a failure. When nothing
// was resolved, the count field holds -errno: EEXIST (a page is already
// there), EAGAIN (mmap_changing: a non-cooperative event is pending and must
// be read first), ENOENT (the range is no longer registered), ESRCH (the
// process is exiting) or ENOSPC (its mm is gone).
#include "uffd/outcome.hpp"

#include <cerrno>

namespace uhmm::uffd {

namespace detail {

Outcome classify(int rc, int err, long long done, std::size_t len) noexcept {
    if (rc == 0) return {Status::done, len, 0};
    if (done > 0) {
        // Some bytes landed. The remainder is the caller's to continue.
        const auto bytes = static_cast<std::size_t>(done);
        return {bytes >= len ? Status::done : Status::partial, bytes, bytes >= len ? 0 : err};
    }
    switch (err) {
        case EEXIST: return {Status::exists, 0, err};
        case EAGAIN: return {Status::retry, 0, err};
        case ENOENT: return {Status::vanished, 0, err};
        case ESRCH:
        case ENOSPC: return {Status::gone, 0, err};
        default: return {Status::failed, 0, err};
    }
}

}  // namespace detail

const char* to_string(Status s) noexcept {
    switch (s) {
        case Status::done: return "done";
        case Status::partial: return "partial";
        case Status::exists: return "exists";
        case Status::retry: return "retry";
        case Status::vanished: return "vanished";
        case Status::gone: return "gone";
        case Status::failed: return "failed";
    }
    return "unknown";
}

}  // namespace uhmm::uffd
