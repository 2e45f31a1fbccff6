// The real functions (see real.hpp).
#include "preload/real.hpp"

#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

extern "C" {
void* __libc_malloc(std::size_t) noexcept;
void __libc_free(void*) noexcept;
void* __libc_calloc(std::size_t, std::size_t) noexcept;
void* __libc_realloc(void*, std::size_t) noexcept;
void* __libc_memalign(std::size_t, std::size_t) noexcept;
}

namespace uhmm::preload::real {

namespace {

using UsableSize = std::size_t (*)(void*);
using Fork = pid_t (*)();
std::atomic<UsableSize> usable_size_fn{nullptr};
std::atomic<Fork> fork_fn{nullptr};

}  // namespace

void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept {
    const long r = ::syscall(SYS_mmap, addr, len, prot, flags, fd, off);
    return r == -1 ? MAP_FAILED : reinterpret_cast<void*>(r);
}

int munmap(void* addr, std::size_t len) noexcept { return static_cast<int>(::syscall(SYS_munmap, addr, len)); }

void* mremap(void* old, std::size_t old_len, std::size_t new_len, int flags, void* new_addr) noexcept {
    const long r = ::syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
    return r == -1 ? MAP_FAILED : reinterpret_cast<void*>(r);
}

int madvise(void* addr, std::size_t len, int advice) noexcept {
    return static_cast<int>(::syscall(SYS_madvise, addr, len, advice));
}

int mprotect(void* addr, std::size_t len, int prot) noexcept {
    return static_cast<int>(::syscall(SYS_mprotect, addr, len, prot));
}

void* malloc(std::size_t n) noexcept { return __libc_malloc(n); }
void free(void* p) noexcept { __libc_free(p); }
void* calloc(std::size_t n, std::size_t size) noexcept { return __libc_calloc(n, size); }
void* realloc(void* p, std::size_t n) noexcept { return __libc_realloc(p, n); }
void* memalign(std::size_t alignment, std::size_t n) noexcept { return __libc_memalign(alignment, n); }

std::size_t malloc_usable_size(void* p) noexcept {
    const UsableSize f = usable_size_fn.load(std::memory_order_acquire);
    return f ? f(p) : 0;
}

pid_t fork() noexcept {
    const Fork f = fork_fn.load(std::memory_order_acquire);
    if (f) return f();
    errno = ENOSYS;
    return -1;
}

void resolve() noexcept {
    usable_size_fn.store(reinterpret_cast<UsableSize>(::dlsym(RTLD_NEXT, "malloc_usable_size")),
                         std::memory_order_release);
    fork_fn.store(reinterpret_cast<Fork>(::dlsym(RTLD_NEXT, "fork")), std::memory_order_release);
}

}  // namespace uhmm::preload::real
