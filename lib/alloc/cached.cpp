// Small objects through the calling thread's cache (thread_cache.hpp): pop
// and push without a lock, refill and flush in batches under the lists'
// locks (small.cpp does the slot work).
#include <algorithm>
#include <cstring>

#include "alloc/heap_state.hpp"
#include "alloc/thread_cache.hpp"

namespace uhmm {

using alloc::Bin;
using alloc::CacheEntry;

namespace {

// The owning thread's relaxed add: no other thread writes the counter.
void bump(std::atomic<std::int64_t>& v, std::int64_t by) noexcept {
    v.store(v.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

}  // namespace

std::size_t Heap::State::list_for(std::size_t cls) const noexcept {
    return alloc::thread_number() % shards * alloc::kClasses + cls;
}

// Half a bin of slots from the thread's shard, under one lock, the lowest
// address popped first.
std::error_code Heap::State::refill(Bin& bin, std::size_t cls) noexcept {
    const std::size_t list = list_for(cls), want = std::max<std::size_t>(1, alloc::bin_capacity(cls) / 2);
    std::uintptr_t got[alloc::kBinMax];
    std::size_t n = 0;
    std::error_code ec;
    {
        std::lock_guard lock(lists[list].lock);
        for (; n < want; ++n) {
            auto a = take_slot(list);
            if (!a) {
                ec = a.error();
                break;
            }
            got[n] = *a;
        }
    }
    if (n == 0) return ec;
    for (std::size_t i = 0; i < n; ++i) bin.slots[i] = got[n - 1 - i];
    bin.count.store(static_cast<std::uint32_t>(n), std::memory_order_relaxed);
    return {};
}

Result<void*> Heap::State::cached_alloc(CacheEntry& e, std::size_t cls, std::size_t bytes) noexcept {
    Bin& bin = e.bins[cls];
    std::uint32_t n = bin.count.load(std::memory_order_relaxed);
    if (n == 0) {
        if (auto ec = refill(bin, cls)) return ec;
        n = bin.count.load(std::memory_order_relaxed);
    }
    const std::uintptr_t a = bin.slots[--n];
    bin.slots[n] = 0;
    bin.count.store(n, std::memory_order_relaxed);
    bump(e.objects, 1);
    bump(e.bytes, static_cast<std::int64_t>(bytes));
    return reinterpret_cast<void*>(a);
}

void Heap::State::cached_free(CacheEntry& e, alloc::Span& s, std::size_t list, std::uintptr_t a,
                              std::size_t bytes) noexcept {
    const std::size_t cls = list % alloc::kClasses;
    // A slot's start in its span (the span's place and class were set
    // before any of its slots was handed out), and not in the bin already.
    Bin& bin = e.bins[cls];
    std::uint32_t n = bin.count.load(std::memory_order_relaxed);
    if (alloc::slot_at_offset(cls, a - s.start) < 0 || bin.holds(a)) {
        bad_free(reinterpret_cast<void*>(a), "not a live object (freed twice, or inside an object)");
        return;
    }
    if (n == alloc::bin_capacity(cls)) {
        flush_bin(bin, n / 2);
        n = bin.count.load(std::memory_order_relaxed);
    }
    bin.slots[n] = a;
    bin.count.store(n + 1, std::memory_order_relaxed);
    bump(e.objects, -1);
    bump(e.bytes, -static_cast<std::int64_t>(std::min<std::size_t>(bytes, alloc::kClassTable[cls].size)));
}

// The oldest `k` slots of the bin back to their spans, one lock per run of
// slots of the same list; spans that empty are retired once no lock is held.
void Heap::State::flush_bin(Bin& bin, std::size_t k) noexcept {
    alloc::Span* retired[alloc::kBinMax];
    std::size_t nretired = 0, bad = 0, locked = alloc::kSlotKinds;
    std::unique_lock<std::mutex> lock;
    for (std::size_t i = 0; i < k; ++i) {
        const std::uintptr_t a = bin.slots[i];
        alloc::Chunk* c = table.find(a);
        alloc::Span* s = c ? c->owner((a & (alloc::kChunkBytes - 1)) / alloc::kPage) : nullptr;
        const std::size_t list = s ? s->kind.load(std::memory_order_acquire) : alloc::kSlotKinds;
        if (list >= alloc::kSlotKinds) {
            ++bad;
            continue;
        }
        if (list != locked) {
            if (lock.owns_lock()) lock.unlock();   // one list lock at a time
            lock = std::unique_lock(lists[list].lock);
            locked = list;
        }
        switch (give_slot(list, *s, a)) {
            case Given::kept: break;
            case Given::retire: retired[nretired++] = s; break;
            case Given::bad: ++bad; break;
        }
    }
    if (lock.owns_lock()) lock.unlock();
    const std::uint32_t n = bin.count.load(std::memory_order_relaxed);
    std::memmove(bin.slots, bin.slots + k, (n - k) * sizeof bin.slots[0]);
    std::fill(bin.slots + (n - k), bin.slots + n, 0);
    bin.count.store(static_cast<std::uint32_t>(n - k), std::memory_order_relaxed);
    for (std::size_t i = 0; i < nretired; ++i) retire(*retired[i], false);
    if (bad) bad_free(nullptr, "a slot freed twice reached its span from a thread's cache");
}

void Heap::State::flush_entry(CacheEntry& e) noexcept {
    for (auto& bin : e.bins) flush_bin(bin, bin.count.load(std::memory_order_relaxed));
}

void Heap::State::drop_entry(CacheEntry& e) noexcept {
    flush_entry(e);
    folded_objects.fetch_add(e.objects.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
    folded_bytes.fetch_add(e.bytes.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
    e.heap.store(nullptr, std::memory_order_relaxed);
}

}  // namespace uhmm
