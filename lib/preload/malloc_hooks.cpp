// The malloc family. Blocks of at least min_range bytes become managed
// ranges of their own (Runtime::allocate: page-aligned, zero-filled on first
// touch, NONE until then); everything else is glibc's. A block's pages may
// be on the device; the program never knows.
//
// realloc of a managed block that grows moves its pages with mremap into a
// bigger managed range: no copy, and device pages stay on the device (the
// runtime's REMAP handling carries their records).
#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "preload/preload.hpp"
#include "preload/real.hpp"

namespace uhmm::preload {

namespace {

constexpr std::size_t kPage = 4096;

std::size_t round_up(std::size_t n) { return (n + kPage - 1) & ~(kPage - 1); }

// A managed block of at least n bytes, or nullptr (the caller falls back to
// glibc: a refusal here never fails the program's allocation).
void* managed_block(std::size_t n, std::size_t alignment = kPage) noexcept {
    if (n > (std::size_t{1} << 46)) return nullptr;
    const std::size_t len = round_up(n);
    return guarded(
        [&]() -> void* {
            auto p = g.rt->allocate(len, alignment < kPage ? kPage : alignment);
            if (!p) return nullptr;
            if (!g.blocks->insert(*p, len)) {
                (void)g.rt->release(*p, len);
                return nullptr;
            }
            return *p;
        },
        static_cast<void*>(nullptr));
}

bool wants_managed(std::size_t n) noexcept { return managing() && n >= g.min_range; }

// Give a managed block back: released by the runtime (its device pages are
// just freed), or, in a fork()ed child, unmapped as the plain memory it is.
void drop_block(void* p, std::size_t len) noexcept {
    if (state() == State::child) {
        (void)real::munmap(p, len);
        return;
    }
    // Released by the runtime; if it refuses (or throws), the memory still goes.
    if (!guarded([&] { return !g.rt->release(p, len); }, false)) (void)real::munmap(p, len);
}

// Grow a managed block: a new managed range, the old pages moved into its
// head with mremap (MREMAP_FIXED replaces the new range's head). Falls back
// to a copy when the move is refused.
void* grow_block(void* p, std::size_t old_len, std::size_t n) noexcept {
    void* q = managed_block(n);
    if (!q) return nullptr;
    // The old place goes away: mirrors drop it first (the runtime's unmap
    // event for it comes later, from the fault thread).
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    (void)guarded(
        [&] {
            if (!g.rt->notifiers().empty())
                (void)g.rt->notifiers().invalidate({a, a + old_len, mirror::Event::unmap, true, nullptr});
            return true;
        },
        false);
    base::InternalScope internal;
    if (real::mremap(p, old_len, old_len, MREMAP_MAYMOVE | MREMAP_FIXED, q) == MAP_FAILED) {
        std::memcpy(q, p, old_len);
        drop_block(p, old_len);
    }
    // Moved: the old range is gone (the runtime drops it on the unmap event).
    return q;
}

}  // namespace

}  // namespace uhmm::preload

using namespace uhmm::preload;

extern "C" {

__attribute__((visibility("default"))) void* malloc(std::size_t n) noexcept {
    if (wants_managed(n))
        if (void* p = managed_block(n)) return p;
    return real::malloc(n);
}

__attribute__((visibility("default"))) void free(void* p) noexcept {
    if (!p) return;
    // The runtime's own threads never hold a program's block: they skip the
    // table (and its lock, which fork's prepare handler holds while the
    // runtime's handler waits for their migrations).
    if (Blocks::may_hold(p) && blocks_live() && !uhmm::base::internal())
        if (auto len = g.blocks->erase(p)) return drop_block(p, *len);
    real::free(p);
}

__attribute__((visibility("default"))) void* calloc(std::size_t n, std::size_t size) noexcept {
    std::size_t total = 0;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return nullptr;
    }
    // A managed block is zero already: its pages are NONE until touched.
    if (wants_managed(total))
        if (void* p = managed_block(total)) return p;
    return real::calloc(n, size);
}

__attribute__((visibility("default"))) void* realloc(void* p, std::size_t n) noexcept {
    if (!p) return malloc(n);
    if (n == 0) {
        free(p);
        return nullptr;
    }
    const auto len = Blocks::may_hold(p) && blocks_live() ? g.blocks->find(p) : std::nullopt;
    if (len) {
        if (n <= *len) return p;   // shrinks stay in place
        if (managing()) {
            if (void* q = grow_block(p, *len, n)) {
                (void)g.blocks->erase(p);
                return q;
            }
        }
        // No runtime (a child) or no managed memory left: glibc takes over.
        void* q = real::malloc(n);
        if (!q) return nullptr;
        std::memcpy(q, p, *len);
        free(p);
        return q;
    }
    if (wants_managed(n)) {
        if (void* q = managed_block(n)) {
            const std::size_t old = real::malloc_usable_size(p);
            std::memcpy(q, p, old < n ? old : n);
            real::free(p);
            return q;
        }
    }
    return real::realloc(p, n);
}

__attribute__((visibility("default"))) void* reallocarray(void* p, std::size_t n, std::size_t size) noexcept {
    std::size_t total = 0;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return nullptr;
    }
    return realloc(p, total);
}

__attribute__((visibility("default"))) void* memalign(std::size_t alignment, std::size_t n) noexcept {
    if (alignment && !(alignment & (alignment - 1)) && wants_managed(n))
        if (void* p = managed_block(n, alignment)) return p;
    return real::memalign(alignment, n);
}

__attribute__((visibility("default"))) void* aligned_alloc(std::size_t alignment, std::size_t n) noexcept {
    return memalign(alignment, n);
}

__attribute__((visibility("default"))) int posix_memalign(void** out, std::size_t alignment, std::size_t n) noexcept {
    if (!alignment || (alignment & (alignment - 1)) || alignment % sizeof(void*)) return EINVAL;
    const int saved = errno;
    void* p = memalign(alignment, n);
    if (!p && n) return ENOMEM;
    errno = saved;
    *out = p;
    return 0;
}

__attribute__((visibility("default"))) void* valloc(std::size_t n) noexcept { return memalign(4096, n); }

__attribute__((visibility("default"))) void* pvalloc(std::size_t n) noexcept {
    return memalign(4096, uhmm::preload::round_up(n ? n : 1));
}

__attribute__((visibility("default"))) std::size_t malloc_usable_size(void* p) noexcept {
    if (!p) return 0;
    if (Blocks::may_hold(p) && blocks_live())
        if (auto len = g.blocks->find(p)) return *len;
    return real::malloc_usable_size(p);
}

}  // extern "C"
