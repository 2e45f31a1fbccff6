// close, close_range, closefrom, dup2, dup3, readdir and readdir64: the
// program's view of its descriptors stays what it would be natively.
//
// The runtime's descriptors (userfaultfd, arena memfd, io_uring, eventfds,
// the control socket) live at the top of the descriptor range
// (base/private_fds.hpp). Here they are made invisible to the program:
// - close() of one fails with EBADF, as for a descriptor that is not open;
//   close_range() and closefrom() close everything else in their range.
//   (A daemon's closefrom(3), or Python's close_fds, would otherwise close
//   the userfaultfd, which unregisters every range: device pages would read
//   back as zeros.)
// - dup2()/dup3() onto one fail with EBADF, as valgrind does.
// - Listing /proc/self/fd (or /dev/fd, /proc/self/task/*/fd, fdinfo)
//   through readdir() skips them.
// The runtime closes its own through Fd, which forgets them first, so these
// hooks never stand in its way. Raw system calls and libc's internal calls
// bypass the hooks, as they bypass every hook.
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "base/internal.hpp"
#include "base/private_fds.hpp"

namespace {

// The next definition of `name` (libc's), looked up on first use: hooks can
// run before the library's constructor.
template <class Fn>
Fn next_fn(std::atomic<Fn>& cache, const char* name) noexcept {
    Fn f = cache.load(std::memory_order_acquire);
    if (!f) {
        f = reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
        cache.store(f, std::memory_order_release);
    }
    return f;
}

// One of the runtime's descriptors, as seen from the program (the runtime's
// own threads and calls may do as they please).
bool hidden(int fd) noexcept { return !uhmm::base::internal() && uhmm::base::is_private_fd(fd); }

int real_close_range(unsigned first, unsigned last, int flags) noexcept {
    return static_cast<int>(::syscall(SYS_close_range, first, last, flags));
}

// close_range over [first, last] minus the runtime's descriptors: the
// pieces between them, in order. 0, or -1 with errno from the first piece
// that failed.
int close_range_around(unsigned first, unsigned last, int flags) noexcept {
    struct Found {
        std::array<int, 256> fds;
        std::size_t n = 0;
    } found;
    uhmm::base::for_each_private_fd(
        first, last,
        [](int fd, void* arg) {
            auto* f = static_cast<Found*>(arg);
            if (f->n < f->fds.size()) f->fds[f->n++] = fd;
        },
        &found);
    if (found.n == 0 || uhmm::base::internal()) return real_close_range(first, last, flags);
    std::sort(found.fds.begin(), found.fds.begin() + static_cast<std::ptrdiff_t>(found.n));
    unsigned from = first;
    for (std::size_t i = 0; i < found.n; ++i) {
        const auto ours = static_cast<unsigned>(found.fds[i]);   // < INT_MAX: ours + 1 cannot wrap
        if (ours > from && real_close_range(from, ours - 1, flags) != 0) return -1;
        from = ours + 1;
    }
    if (from <= last && real_close_range(from, last, flags) != 0) return -1;
    return 0;
}

// "/proc/<our pid>/fd", ".../fdinfo", "/proc/<our pid>/task/<tid>/fd" (or
// fdinfo): the directories whose entries are our descriptors.
bool is_own_fd_dir(DIR* dir) noexcept {
    char link[64], target[256];
    const int dfd = ::dirfd(dir);
    if (dfd < 0) return false;
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", dfd);
    const ssize_t n = ::readlink(link, target, sizeof target - 1);
    if (n <= 0) return false;
    std::string_view t(target, static_cast<std::size_t>(n));
    char prefix[32];
    const int len = std::snprintf(prefix, sizeof prefix, "/proc/%d/", static_cast<int>(::getpid()));
    if (len <= 0 || !t.starts_with(std::string_view(prefix, static_cast<std::size_t>(len)))) return false;
    t.remove_prefix(static_cast<std::size_t>(len));
    if (t.starts_with("task/")) {
        t.remove_prefix(5);
        const auto slash = t.find('/');
        if (slash == std::string_view::npos || slash == 0) return false;
        t.remove_prefix(slash + 1);
    }
    return t == "fd" || t == "fdinfo";
}

// An entry to skip: the name of one of the runtime's descriptors, listed in
// one of this process's descriptor directories.
bool skip_entry(DIR* dir, const char* name) noexcept {
    int fd = -1;
    const std::size_t len = std::strlen(name);
    const auto [end, ec] = std::from_chars(name, name + len, fd);
    if (ec != std::errc{} || end != name + len || !hidden(fd)) return false;
    return is_own_fd_dir(dir);
}

using ReaddirFn = dirent* (*)(DIR*);
std::atomic<ReaddirFn> real_readdir{nullptr};
using CloseFn = int (*)(int);
std::atomic<CloseFn> real_close{nullptr};
using Dup2Fn = int (*)(int, int);
std::atomic<Dup2Fn> real_dup2{nullptr};
using Dup3Fn = int (*)(int, int, int);
std::atomic<Dup3Fn> real_dup3{nullptr};

int ebadf() noexcept {
    errno = EBADF;
    return -1;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int close(int fd) {
    if (hidden(fd)) return ebadf();
    // libc's close: a cancellation point, as the program expects.
    if (auto f = next_fn(real_close, "close")) return f(fd);
    return static_cast<int>(::syscall(SYS_close, fd));
}

__attribute__((visibility("default"))) int close_range(unsigned first, unsigned last, int flags) noexcept {
    if (first > last) {
        errno = EINVAL;
        return -1;
    }
    return close_range_around(first, last, flags);
}

__attribute__((visibility("default"))) void closefrom(int lowfd) noexcept {
    const unsigned first = lowfd < 0 ? 0u : static_cast<unsigned>(lowfd);
    if (close_range_around(first, UINT_MAX, 0) == 0) return;
    // No close_range (Linux < 5.9): one descriptor at a time, as glibc's own
    // fallback does, sparing ours.
    const long max = ::sysconf(_SC_OPEN_MAX);
    for (long fd = first; fd < (max > 0 ? max : 1024); ++fd)
        if (!hidden(static_cast<int>(fd))) ::syscall(SYS_close, fd);
}

__attribute__((visibility("default"))) int dup2(int oldfd, int newfd) noexcept {
    if (hidden(newfd) || hidden(oldfd)) return ebadf();
    if (auto f = next_fn(real_dup2, "dup2")) return f(oldfd, newfd);
    return static_cast<int>(::syscall(SYS_dup2, oldfd, newfd));
}

__attribute__((visibility("default"))) int dup3(int oldfd, int newfd, int flags) noexcept {
    if (hidden(newfd) || hidden(oldfd)) return ebadf();
    if (auto f = next_fn(real_dup3, "dup3")) return f(oldfd, newfd, flags);
    return static_cast<int>(::syscall(SYS_dup3, oldfd, newfd, flags));
}

// readdir and readdir64 are one function in a 64-bit glibc (struct dirent
// is struct dirent64 there): both names are defined here by symbol name.
dirent* uhmm_preload_readdir(DIR* dir) noexcept __asm__("readdir") __attribute__((visibility("default")));
dirent* uhmm_preload_readdir64(DIR* dir) noexcept __asm__("readdir64") __attribute__((visibility("default")));

dirent* uhmm_preload_readdir(DIR* dir) noexcept {
    const ReaddirFn next = next_fn(real_readdir, "readdir");
    if (!next) {
        errno = ENOSYS;
        return nullptr;
    }
    for (;;) {
        dirent* d = next(dir);
        if (d == nullptr || !skip_entry(dir, d->d_name)) return d;
    }
}

dirent* uhmm_preload_readdir64(DIR* dir) noexcept { return uhmm_preload_readdir(dir); }

}  // extern "C"
