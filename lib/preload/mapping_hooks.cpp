// mmap, munmap, mremap, madvise, mprotect and fork.
//
// - Private anonymous read-write mappings of at least min_range bytes become
//   managed ranges (Runtime::manage_fresh: no smaps read, the hook knows
//   what it just mapped).
// - munmap, mremap, madvise(DONTNEED/FREE/REMOVE) of watched memory tell the
//   mirrors before the kernel acts (blockable), as the kernel's notifiers
//   do; the userfaultfd events stay the ground truth for calls that bypass
//   these hooks (raw syscalls, libc's internal calls).
// - mprotect goes through Runtime::protect (mprotect has no userfaultfd event).
// - madvise(MADV_HUGEPAGE) of managed memory is declined (it succeeds and
//   does nothing): managed pages are 4 KiB so that each moves on its own.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdint>

#include "preload/preload.hpp"
#include "preload/real.hpp"

namespace uhmm::preload {

namespace {

constexpr std::size_t kPage = 4096;

std::size_t round_up(std::size_t n) { return (n + kPage - 1) & ~(kPage - 1); }

bool manageable_mapping(std::size_t len, int prot, int flags, int fd) {
    constexpr int kNever = MAP_SHARED | MAP_HUGETLB | MAP_GROWSDOWN | MAP_STACK;
    return (flags & MAP_PRIVATE) && (flags & MAP_ANONYMOUS) && !(flags & kNever) && fd == -1 &&
           prot == (PROT_READ | PROT_WRITE) && len >= g.min_range;
}

// Mirrors watching [addr, addr+len) drop it before the kernel acts.
void tell_mirrors(void* addr, std::size_t len, mirror::Event event) noexcept {
    if (g.rt->notifiers().empty()) return;   // lock-free: the usual case costs nothing
    const auto a = reinterpret_cast<std::uintptr_t>(addr) & ~(std::uintptr_t{kPage} - 1);
    const auto b = round_up(reinterpret_cast<std::uintptr_t>(addr) + len);
    if (b <= a) return;
    (void)guarded([&] { return g.rt->notifiers().invalidate({a, b, event, true, nullptr}); },
                  mirror::NotifierRegistry::Outcome::done);
}

}  // namespace

}  // namespace uhmm::preload

using namespace uhmm::preload;
using uhmm::mirror::Event;

extern "C" {

// With _FILE_OFFSET_BITS=64 glibc's header renames mmap to mmap64; a 64-bit
// glibc exports both names for the one function. Both are defined here by
// their symbol names, whatever the header calls them.
void* uhmm_preload_mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept
    __asm__("mmap") __attribute__((visibility("default")));
void* uhmm_preload_mmap64(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept
    __asm__("mmap64") __attribute__((visibility("default")));

void* uhmm_preload_mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept {
    void* p = real::mmap(addr, len, prot, flags, fd, off);
    if (p == MAP_FAILED || !managing() || !manageable_mapping(len, prot, flags, fd)) return p;
    (void)guarded([&] { return g.rt->manage_fresh(p, round_up(len)); }, std::error_code{});   // refused: plain memory
    return p;
}

void* uhmm_preload_mmap64(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept {
    return uhmm_preload_mmap(addr, len, prot, flags, fd, off);
}

__attribute__((visibility("default"))) int munmap(void* addr, std::size_t len) noexcept {
    if (managing()) tell_mirrors(addr, len, Event::unmap);
    return real::munmap(addr, len);
}

__attribute__((visibility("default"))) void* mremap(void* old, std::size_t old_len, std::size_t new_len, int flags,
                                                    ...) noexcept {
    void* new_addr = nullptr;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void*);
        va_end(ap);
    }
    if (!managing()) return real::mremap(old, old_len, new_len, flags, new_addr);
    tell_mirrors(old, old_len, Event::unmap);
    const bool was_managed = guarded([&] { return g.rt->manages(old, old_len); }, false);
    void* p = real::mremap(old, old_len, new_len, flags, new_addr);
    // Grown: the new tail carries the old mapping's registration but no page
    // records. Manage it, so that it migrates like the rest.
    if (p != MAP_FAILED && was_managed && round_up(new_len) > round_up(old_len)) {
        char* tail = static_cast<char*>(p) + round_up(old_len);
        (void)guarded([&] { return g.rt->manage_fresh(tail, round_up(new_len) - round_up(old_len)); },
                      std::error_code{});
    }
    return p;
}

__attribute__((visibility("default"))) int madvise(void* addr, std::size_t len, int advice) noexcept {
    if (managing()) {
        if (advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE)
            tell_mirrors(addr, len, Event::clear);
        if (advice == MADV_HUGEPAGE && guarded([&] { return g.rt->manages(addr, len); }, false)) return 0;
    }
    return real::madvise(addr, len, advice);
}

__attribute__((visibility("default"))) int mprotect(void* addr, std::size_t len, int prot) noexcept {
    if (!managing()) return real::mprotect(addr, len, prot);
    // A runtime that throws still owes the program its mprotect.
    const auto ec = guarded([&] { return g.rt->protect(addr, len, prot); },
                            std::error_code(-1, std::generic_category()));
    if (ec.value() == -1) return real::mprotect(addr, len, prot);
    if (ec) {
        errno = ec.value();
        return -1;
    }
    return 0;
}

__attribute__((visibility("default"))) pid_t fork() noexcept {
    // The runtime's pthread_atfork handlers bring device pages home before
    // the fork and make the child's copy inert; this library's own handler
    // marks the child (see preload.cpp).
    return real::fork();
}

}  // extern "C"
