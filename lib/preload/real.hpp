// The real functions behind the hooks, reached without dlsym where possible:
// the mapping calls are raw system calls, the allocator is glibc's own
// __libc_* entry points (exported for exactly this use). Only fork and
// malloc_usable_size need dlsym, resolved once libc is up (resolve()).
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace uhmm::preload::real {

void* mmap(void* addr, std::size_t len, int prot, int flags, int fd, off_t off) noexcept;
int munmap(void* addr, std::size_t len) noexcept;
void* mremap(void* old, std::size_t old_len, std::size_t new_len, int flags, void* new_addr) noexcept;
int madvise(void* addr, std::size_t len, int advice) noexcept;
int mprotect(void* addr, std::size_t len, int prot) noexcept;

void* malloc(std::size_t n) noexcept;
void free(void* p) noexcept;
void* calloc(std::size_t n, std::size_t size) noexcept;
void* realloc(void* p, std::size_t n) noexcept;
void* memalign(std::size_t alignment, std::size_t n) noexcept;
std::size_t malloc_usable_size(void* p) noexcept;
pid_t fork() noexcept;

// dlsym the few that need it. Call once libc is initialised (the library's
// constructor); until then those two answer as if nothing was found.
void resolve() noexcept;

}  // namespace uhmm::preload::real
