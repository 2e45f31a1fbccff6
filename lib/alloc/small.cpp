// Small objects: slots of a size class's spans, under the lock of the class
// list (the class in one shard) that owns the span.
//
// A list takes slots from its first span (partly used spans sit first, so
// holes are filled before fresh pages are touched); a span that fills up
// leaves the list, one that gets a slot back rejoins at the front. A span
// that empties stays as the list's one empty span, or, when the list already
// keeps one, is retired: its pages go back to the runtime and the chunk
// (pages.cpp). Threads' caches (thread_cache.cpp) take and give slots here
// in batches.
#include <algorithm>

#include "alloc/heap_state.hpp"

namespace uhmm {

using alloc::Span;

Result<std::uintptr_t> Heap::State::take_slot(std::size_t list) noexcept {
    alloc::SizeClass& sc = lists[list];
    if (sc.spans.empty()) {
        const std::size_t cls = list % alloc::kClasses;
        auto fresh = carve(alloc::kClassTable[cls].span_pages, 1, static_cast<std::uint16_t>(list), 0);
        if (!fresh) return fresh.error();
        (*fresh)->init_slots(cls);
        sc.spans.push_front(**fresh);
    } else if (sc.spans.front().used == 0) {
        sc.has_empty = false;   // the kept empty span is the only one left
    }
    Span& s = sc.spans.front();
    const std::uintptr_t a = s.take();
    if (s.full()) sc.spans.pop_front();
    return a;
}

Heap::State::Given Heap::State::give_slot(std::size_t list, Span& s, std::uintptr_t a) noexcept {
    alloc::SizeClass& sc = lists[list];
    // Under the list's lock a span of this list stays one (span.hpp).
    const long slot = s.kind.load(std::memory_order_relaxed) == list ? s.slot_at(a) : -1;
    if (slot < 0) return Given::bad;
    const bool listed = !s.full();
    s.give(static_cast<std::size_t>(slot));
    if (s.used > 0) {
        if (!listed) sc.spans.push_front(s);
        return Given::kept;
    }
    if (listed) sc.spans.erase(sc.spans.iterator_to(s));
    if (!sc.has_empty) {
        sc.has_empty = true;
        sc.spans.push_back(s);
        return Given::kept;
    }
    s.kind.store(alloc::kSpanReturning, std::memory_order_release);
    return Given::retire;
}

Result<void*> Heap::State::alloc_slot(std::size_t list, std::size_t bytes) noexcept {
    alloc::SizeClass& sc = lists[list];
    std::lock_guard lock(sc.lock);
    auto a = take_slot(list);
    if (!a) return a.error();
    ++sc.objects;
    sc.bytes += bytes;
    return reinterpret_cast<void*>(*a);
}

void Heap::State::free_slot(Span& s, std::size_t list, std::uintptr_t a, std::size_t bytes) noexcept {
    alloc::SizeClass& sc = lists[list];
    std::unique_lock lock(sc.lock);
    const Given given = give_slot(list, s, a);
    if (given != Given::bad) {
        --sc.objects;
        sc.bytes -= std::min<std::size_t>(bytes, s.size);
    }
    lock.unlock();
    if (given == Given::bad) bad_free(reinterpret_cast<void*>(a), "not a live object (freed twice, or not from this heap)");
    if (given == Given::retire) retire(s, false);
}

}  // namespace uhmm
