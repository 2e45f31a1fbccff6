// Classification of resolve-ioctl results, in one place (criu's
// uffd_recoverable_error, seastar's posix.hh): every UFFDIO_* resolve returns
// -1/errno plus a count field that the kernel writes (bytes done, or -errno).
#pragma once

#include <uhmm/uffd.hpp>

namespace uhmm::uffd::detail {

// rc: the ioctl's return value; err: errno after it; done: the kernel-written
// count field (bytes resolved, or -errno); len: bytes asked for.
Outcome classify(int rc, int err, long long done, std::size_t len) noexcept;

}  // namespace uhmm::uffd::detail
