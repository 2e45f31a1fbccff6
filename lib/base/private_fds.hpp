// The runtime's own file descriptors, kept out of the program's way.
//
// A preloaded program must see the descriptors it would see natively: the
// same numbers from open() (the lowest free one), the same /proc/self/fd,
// and nothing of ours that its close(), close_range(), closefrom() or
// dup2() could close or replace (closing the userfaultfd would unregister
// every range, and device pages would read back as zeros). So, as valgrind
// and rr do, every descriptor the runtime keeps is moved to the top of the
// range programs use (F_DUPFD_CLOEXEC to a base below RLIMIT_NOFILE, at
// most 1024) and recorded here; the preload library's hooks consult the
// record (lib/preload/fd_hooks.cpp), and a fork()ed child, whose copy of
// the runtime is inert, closes them all.
//
// Lock-free: the hooks run on any thread, in signal handlers, and in a
// child between fork and exec.
#pragma once

namespace uhmm::base {

// Move `fd` up (closing the original) and record it as the runtime's.
// Returns the descriptor to use from now on: the moved one, or `fd` itself
// (still recorded) when there is no room above. -1 stays -1.
int hide_fd(int fd) noexcept;

// Forget `fd` (the runtime is about to close it). Fd::reset calls it.
void forget_fd(int fd) noexcept;

// Whether `fd` is one of the runtime's.
bool is_private_fd(int fd) noexcept;

// Calls `fn(fd, arg)` for each of the runtime's descriptors in [first, last].
void for_each_private_fd(unsigned first, unsigned last, void (*fn)(int fd, void* arg), void* arg) noexcept;

}  // namespace uhmm::base
