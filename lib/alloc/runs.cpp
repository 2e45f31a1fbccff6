// Medium objects: a run of whole pages of a chunk for one object (above
// kSmallMax, below the large threshold, or aligned beyond a page). A run is
// a span with one slot; its record and the page owners are guarded by the
// page lock rather than a class's.
#include <algorithm>

#include "alloc/heap_state.hpp"

namespace uhmm {

Result<void*> Heap::State::alloc_run(std::size_t bytes, std::size_t alignment) noexcept {
    const std::size_t pages = (bytes + alloc::kPage - 1) / alloc::kPage;
    const std::size_t align_pages = std::max<std::size_t>(1, alignment / alloc::kPage);
    auto s = carve(pages, align_pages, alloc::kSpanRun, bytes);
    if (!s) return s.error();
    return reinterpret_cast<void*>((*s)->start);
}

void Heap::State::free_run(alloc::Span& s, std::uintptr_t a) noexcept {
    bool live = false;
    {
        std::lock_guard lock(page_lock);
        live = s.kind.load(std::memory_order_relaxed) == alloc::kSpanRun && s.start == a;
        if (live) {
            s.kind.store(alloc::kSpanReturning, std::memory_order_release);
            --runs;
            run_pages -= s.pages;
            run_bytes -= s.size;
        }
    }
    if (live) retire(s, true);
    else bad_free(reinterpret_cast<void*>(a), "not the start of a live object");
}

}  // namespace uhmm
