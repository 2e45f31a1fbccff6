// uhmm::Fd — the move-only owner of a file descriptor.
//
// Every descriptor the runtime opens (userfaultfd, eventfds, arena memfds,
// io_uring) has exactly one owner, so that multi-step setup unwinds on failure
// and nothing leaks into a forked child or an exec'd program by accident.
#pragma once

#include <unistd.h>

#include <utility>

namespace uhmm {

namespace detail {
// The runtime keeps its descriptors out of the program's way (moved high and
// recorded, lib/base/private_fds.hpp); closing one forgets it first.
void forget_descriptor(int fd) noexcept;
}  // namespace detail

class Fd {
public:
    Fd() noexcept = default;
    explicit Fd(int fd) noexcept : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }

    int get() const noexcept { return fd_; }
    bool valid() const noexcept { return fd_ >= 0; }
    explicit operator bool() const noexcept { return valid(); }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) {
            detail::forget_descriptor(fd_);
            ::close(fd_);
        }
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

}  // namespace uhmm
