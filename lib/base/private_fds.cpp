// The runtime's own file descriptors (see private_fds.hpp).
#include "base/private_fds.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>

#include <uhmm/fd.hpp>

namespace uhmm::base {

namespace {

// Room for every descriptor a runtime keeps (about a dozen) and the control
// socket's connections; beyond it a descriptor stays where it is, unhidden.
constexpr std::size_t kSlots = 256;
// The top of the range: RLIMIT_NOFILE's soft limit, but never above 1024.
// The kernel sizes a process's descriptor table by its highest descriptor,
// and fork() copies that table: a descriptor near a soft limit of 2^20 would
// cost every fork a megabyte-sized copy.
constexpr long kMaxTop = 1024;
// Ours go to [top - kReserved, top), or to the upper half of a smaller
// range. Never to 0, 1 or 2 in any case: a program started with its
// standard streams closed would take the userfaultfd for its stdin (CPython
// under test_subprocess hung so, its stdin reading the runtime's faults).
constexpr long kReserved = 128;

// Each slot holds a descriptor + 1 (0: free), so that the table is
// constant-initialised: hooks may run before any constructor.
constinit std::array<std::atomic<int>, kSlots> slots{};
// Bounds of the recorded descriptors, so that a hook's check of a program's
// descriptor is two compares. Only ever widened (a stale bound costs a scan).
constinit std::atomic<int> lowest{INT_MAX}, highest{-1};

// The fork()ed child's copy of the runtime is inert: its descriptors go, so
// that the child's table is what it would be natively.
void close_all_in_child() noexcept {
    for (auto& s : slots) {
        // Forgotten first, so that the preload library's close hook lets
        // it through; libc's close, so that sanitizers see it too.
        const int fd = s.exchange(0, std::memory_order_relaxed) - 1;
        if (fd >= 0) ::close(fd);
    }
    lowest.store(INT_MAX, std::memory_order_relaxed);
    highest.store(-1, std::memory_order_relaxed);
}

long hiding_base() noexcept {
    rlimit rl{};
    long top = kMaxTop;
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        top = std::min<long>(kMaxTop, static_cast<long>(rl.rlim_cur));
    return std::max(3L, top - std::min(kReserved, top / 2));
}

void record(int fd) noexcept {
    for (auto& s : slots) {
        int expected = 0;
        if (s.compare_exchange_strong(expected, fd + 1, std::memory_order_release, std::memory_order_relaxed)) {
            int lo = lowest.load(std::memory_order_relaxed);
            while (fd < lo && !lowest.compare_exchange_weak(lo, fd, std::memory_order_release)) {}
            int hi = highest.load(std::memory_order_relaxed);
            while (fd > hi && !highest.compare_exchange_weak(hi, fd, std::memory_order_release)) {}
            return;
        }
    }
}

}  // namespace

int hide_fd(int fd) noexcept {
    if (fd < 0) return fd;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    ::pthread_once(&once, [] { ::pthread_atfork(nullptr, nullptr, close_all_in_child); });
    int use = fd;
    if (const long base = hiding_base(); fd < base) {
        const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, static_cast<int>(base));
        if (moved >= 0) {
            ::close(fd);   // not recorded yet: the close hook lets it through
            use = moved;
        }
    }
    record(use);
    return use;
}

void forget_fd(int fd) noexcept {
    if (fd < 0) return;
    for (auto& s : slots) {
        int expected = fd + 1;
        if (s.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) return;
    }
}

bool is_private_fd(int fd) noexcept {
    if (fd < lowest.load(std::memory_order_acquire) || fd > highest.load(std::memory_order_acquire)) return false;
    for (const auto& s : slots)
        if (s.load(std::memory_order_acquire) == fd + 1) return true;
    return false;
}

void for_each_private_fd(unsigned first, unsigned last, void (*fn)(int fd, void* arg), void* arg) noexcept {
    for (const auto& s : slots) {
        const int fd = s.load(std::memory_order_acquire) - 1;
        if (fd >= 0 && static_cast<unsigned>(fd) >= first && static_cast<unsigned>(fd) <= last) fn(fd, arg);
    }
}

}  // namespace uhmm::base

namespace uhmm::detail {
void forget_descriptor(int fd) noexcept { base::forget_fd(fd); }
}  // namespace uhmm::detail
