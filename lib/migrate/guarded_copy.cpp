// Guarded copies (see the header for why and when).
#include "migrate/guarded_copy.hpp"

#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace uhmm::migrate::detail {

namespace {

// One per thread, alive only during guarded_copy(). initial-exec: the handler
// must reach it without the lazy TLS allocation a dlopen'ed library's
// variables may need (that allocates, which a signal handler must not).
struct Guard {
    sigjmp_buf env;
    std::uintptr_t lo = 0, hi = 0;   // the application range of the copy
    volatile std::size_t done = 0;   // bytes copied before the current step
    volatile int sig = 0;
};
[[gnu::tls_model("initial-exec")]] thread_local Guard* volatile tl_guard = nullptr;

constexpr std::size_t kPage = 4096;

void restore_default_and_return(int sig, siginfo_t* info) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    ::sigaction(sig, &dfl, nullptr);
    // A fault the kernel raised runs again on return and now takes the
    // default action; one sent by kill()/tgkill() must be sent again.
    if (info == nullptr || info->si_code <= 0) ::raise(sig);
}

void on_fault(int sig, siginfo_t* info, void*) {
    Guard* g = tl_guard;
    if (g != nullptr && info != nullptr && info->si_code > 0) {
        const auto at = reinterpret_cast<std::uintptr_t>(info->si_addr);
        if (at >= g->lo && at < g->hi) {
            tl_guard = nullptr;
            g->sig = sig;
            siglongjmp(g->env, 1);
        }
    }
    restore_default_and_return(sig, info);
}

// Page by page of the application side: memcpy may touch a block's end
// before its start, so only whole steps done before a fault count. Out of
// line: nothing here may live in a register across the jump back.
[[gnu::noinline]] void copy_in_steps(Guard& g, std::byte* d, const std::byte* s, std::size_t len) noexcept {
    std::size_t at = 0;
    while (at < len) {
        const std::size_t to_boundary = kPage - ((g.lo + at) & (kPage - 1));
        const std::size_t n = to_boundary < len - at ? to_boundary : len - at;
        std::memcpy(d + at, s + at, n);
        at += n;
        g.done = at;
    }
}

bool ours(int sig) {
    struct sigaction cur {};
    if (::sigaction(sig, nullptr, &cur) != 0) return false;
    return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == &on_fault;
}

bool defaulted(int sig) {
    struct sigaction cur {};
    return ::sigaction(sig, nullptr, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_DFL;
}

bool install() {
    if (!defaulted(SIGSEGV) || !defaulted(SIGBUS)) return false;   // the program's own: hands off
    struct sigaction sa {};
    sa.sa_sigaction = &on_fault;
    // SA_NODEFER: the signal stays unblocked in the handler, so a jump out of
    // it leaves the thread's mask as it was, with no mask saved per copy.
    // SA_ONSTACK: a program's alternate stack, where it has one, serves us too.
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(SIGSEGV, &sa, nullptr) != 0) return false;
    if (::sigaction(SIGBUS, &sa, nullptr) != 0) {
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigaction(SIGSEGV, &dfl, nullptr);
        return false;
    }
    return true;
}

}  // namespace

bool guarded_copy_ready() noexcept {
    if (ours(SIGSEGV) && ours(SIGBUS)) return true;
    // Not (or no longer) ours: take them only where both are at their
    // default again; a handler of the program's is never replaced.
    return install();
}

GuardedOutcome guarded_copy(void* dst, const void* src, std::size_t len, const void* app) noexcept {
    Guard g;
    g.lo = reinterpret_cast<std::uintptr_t>(app);
    g.hi = g.lo + len;
    if (sigsetjmp(g.env, 0) != 0) return {g.done, g.sig == SIGBUS ? EIO : EFAULT};
    tl_guard = &g;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    copy_in_steps(g, static_cast<std::byte*>(dst), static_cast<const std::byte*>(src), len);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    tl_guard = nullptr;
    return {len, 0};
}

FaultsUnblocked::FaultsUnblocked() noexcept {
    static_assert(sizeof(old_) >= sizeof(sigset_t));
    sigset_t faults;
    sigemptyset(&faults);
    sigaddset(&faults, SIGSEGV);
    sigaddset(&faults, SIGBUS);
    ::pthread_sigmask(SIG_UNBLOCK, &faults, reinterpret_cast<sigset_t*>(old_));
}

FaultsUnblocked::~FaultsUnblocked() { ::pthread_sigmask(SIG_SETMASK, reinterpret_cast<sigset_t*>(old_), nullptr); }

}  // namespace uhmm::migrate::detail
