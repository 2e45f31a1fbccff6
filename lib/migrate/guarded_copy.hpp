// Guarded copies: memcpy to or from application memory that answers EFAULT,
// instead of killing the process, when the application unmaps that memory in
// the middle of the copy.
//
// Why not the kernel's copy (io_uring, process_vm_readv), which is safe by
// construction: it is slower. On the machines measured (a PVM guest with
// shadow paging) the kernel's first access to a user page costs a hypervisor
// exit every time the page's mapping is new to kernel mode, so every
// migration pays it: 0.15-0.18x memcpy for io_uring WRITE from 4 KiB pages,
// against 0.34-0.42x with memcpy in the same runs. On bare metal the kernel
// copy also runs page by page through the page cache (~9 GB/s at 2 MiB,
// ~3 GB/s at 4 KiB, against ~17-19 GB/s for memcpy).
//
// How: the first guarded copy installs a SIGSEGV and a SIGBUS handler, but
// only while both signals have their default disposition (the process has no
// handler of its own, as almost every program). A copy records, in a
// thread-local guard, the application range it touches; a fault inside that
// range in that thread jumps back out of the copy (siglongjmp) with the bytes
// done. Any other fault restores the default disposition and returns, so the
// faulting instruction runs again and the process dies exactly as it would
// have without uhmm. Each copy first checks that the handlers are still ours:
// a program that installs its own later gets the kernel's copy from then on.
// The copying thread must have both signals unblocked (FaultsUnblocked):
// a synchronous fault on a blocked signal kills the process.
#pragma once

#include <cstddef>

namespace uhmm::migrate::detail {

// Whether guarded_copy may be used now, installing the handlers when both
// signals are at their default disposition. Two sigaction queries once they
// are installed.
bool guarded_copy_ready() noexcept;

struct GuardedOutcome {
    std::size_t bytes = 0;   // copied before the page that faulted (all of len when error is 0)
    int error = 0;           // EFAULT (SIGSEGV: unmapped, no access) or EIO (SIGBUS: poisoned, truncated)
};

// memcpy(dst, src, len), where [app, app + len) (dst or src) is application
// memory. Only after guarded_copy_ready() returned true, in a thread with
// SIGSEGV and SIGBUS unblocked.
GuardedOutcome guarded_copy(void* dst, const void* src, std::size_t len, const void* app) noexcept;

// SIGSEGV and SIGBUS unblocked in this thread for the scope's life (the
// runtime's threads block every signal), the previous mask restored after.
class FaultsUnblocked {
public:
    FaultsUnblocked() noexcept;
    ~FaultsUnblocked();
    FaultsUnblocked(const FaultsUnblocked&) = delete;
    FaultsUnblocked& operator=(const FaultsUnblocked&) = delete;

private:
    unsigned long old_[128 / sizeof(unsigned long)];   // a sigset_t, without <signal.h> here
};

}  // namespace uhmm::migrate::detail
