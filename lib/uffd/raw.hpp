// Opening a raw userfaultfd and the UFFDIO_API handshake, shared by probe()
// and Uffd::open() so that both take the same path.
#pragma once

#include <uhmm/uffd.hpp>

namespace uhmm::uffd::detail {

// A fresh, not yet negotiated userfaultfd (O_CLOEXEC | O_NONBLOCK, never
// UFFD_USER_MODE_ONLY): the syscall first, /dev/userfaultfd when the syscall
// is refused. `path` says which one worked.
Result<Fd> open_raw(OpenPath& path);

struct Api { std::uint64_t features; std::uint64_t ioctls; };

// UFFDIO_API on `fd`, enabling `features`. The kernel answers with every
// feature it has (whatever was asked for). Allowed once per fd.
Result<Api> handshake(int fd, std::uint64_t features);

// One line saying why userfaultfd was refused with `err` and what fixes it,
// from the state of this process and machine.
std::string explain_refusal(int err);

}  // namespace uhmm::uffd::detail
