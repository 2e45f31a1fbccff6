// Large objects: a managed range each (Runtime::allocate / release), for
// objects of the large threshold (min_range) and up, and for alignments
// beyond a chunk. The map from start to length answers owns() and keeps a
// deallocate() of someone else's range from releasing it.
#include <algorithm>
#include <new>

#include <uhmm/runtime.hpp>

#include "alloc/heap_state.hpp"
#include "base/internal.hpp"
#include "base/log.hpp"

namespace uhmm {

Result<void*> Heap::State::alloc_large(std::size_t bytes, std::size_t alignment) noexcept {
    auto mem = rt.allocate(bytes, std::max(alignment, alloc::kPage));
    if (!mem) return mem.error();
    const std::size_t len = (bytes + alloc::kPage - 1) / alloc::kPage * alloc::kPage;
    try {
        base::InternalScope internal;   // the map's node from the real malloc (see pages.cpp)
        std::lock_guard lock(large_lock);
        large.emplace(reinterpret_cast<std::uintptr_t>(*mem), len);
        large_bytes += len;
    } catch (const std::bad_alloc&) {
        (void)rt.release(*mem, len);
        return errno_code(ENOMEM);
    }
    return *mem;
}

bool Heap::State::free_large(std::uintptr_t a) noexcept {
    std::size_t len = 0;
    {
        std::lock_guard lock(large_lock);
        const auto it = large.find(a);
        if (it == large.end()) return false;
        len = it->second;
        large_bytes -= len;
        large.erase(it);
    }
    if (auto ec = rt.release(reinterpret_cast<void*>(a), len))
        log::get().warn("heap: releasing a large object at {:#x}: {}", a, ec.message());
    return true;
}

bool Heap::State::owns_large(std::uintptr_t a) const noexcept {
    std::lock_guard lock(large_lock);
    auto it = large.upper_bound(a);
    if (it == large.begin()) return false;
    --it;
    return a - it->first < it->second;
}

void Heap::State::release_all_large() noexcept {
    std::lock_guard lock(large_lock);
    for (const auto& [start, len] : large) (void)rt.release(reinterpret_cast<void*>(start), len);
    large.clear();
    large_bytes = 0;
}

}  // namespace uhmm
