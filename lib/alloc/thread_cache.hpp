// ThreadCache: each thread's own stacks of free slots, per heap and small
// size class, so that most allocate() and deallocate() calls take no lock.
//
// A bin (one class of one heap) holds at most bin_capacity(class) slots: an
// allocation pops one, a refill takes half a bin's worth from the thread's
// shard under one lock; a free pushes one, and a full bin gives its older
// half back to the spans, one lock per class list met. Only classes up to
// kCachedMax are cached; a bin holds at most about 16 KiB, so a thread keeps
// little memory from others and from the device (a slot in a cache is still
// "used" for its span, so the span cannot be retired while it sits there).
//
// A thread has kCacheEntries entries, one per heap it uses (the least
// recent is given back when a fifth heap comes). Lifetimes, without any
// pointer left dangling:
//   - every ThreadCache is in one registry, under one lock;
//   - a heap going away clears its entries (under that lock) and drops their
//     slots with the chunks;
//   - a thread ending gives its entries' slots back to their heaps (under
//     that lock, so no heap can go meanwhile): a pthread key's destructor;
//   - an entry's heap pointer is only compared, never followed, until it
//     matches the heap the thread is calling.
// A freed pointer is checked before it enters a bin (a slot's start in a
// live span of this heap, not already in the bin), so a foreign pointer is
// refused at once. A pointer freed twice with other frees between may reach
// a bin and is then caught when the bin gives it back to its span; until
// then it may be handed out again, as malloc would.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include <boost/intrusive/list.hpp>

#include <uhmm/heap.hpp>

#include "alloc/size_classes.hpp"
#include "base/internal.hpp"

namespace uhmm::alloc {

inline constexpr std::size_t kCachedMax = 4096;
inline constexpr std::size_t kCachedClasses = class_index(kCachedMax) + 1;
inline constexpr std::size_t kBinMax = 16;
inline constexpr std::size_t kCacheEntries = 4;

// A bin holds 16 KiB worth of slots, at least 4 and at most kBinMax (a
// table: the free path reads it on every call).
inline constexpr auto kBinCapacity = [] {
    std::array<std::uint32_t, kCachedClasses> cap{};
    for (std::size_t c = 0; c < kCachedClasses; ++c)
        cap[c] = static_cast<std::uint32_t>(std::clamp<std::size_t>(16 * 1024 / kClassTable[c].size, 4, kBinMax));
    return cap;
}();
constexpr std::uint32_t bin_capacity(std::size_t cls) noexcept { return kBinCapacity[cls]; }

struct Bin {
    std::atomic<std::uint32_t> count{0};   // written by the owning thread only; stats() reads it
    std::uintptr_t slots[kBinMax] = {};    // [0, count): free slots, the newest last; the rest 0

    // Whether `a` (not 0) is among the free slots: all kBinMax compared in
    // four independent chains, without a branch per slot (a loop that
    // stops at a match mispredicts its exit; one chain waits on itself).
    bool holds(std::uintptr_t a) const noexcept {
        bool f0 = false, f1 = false, f2 = false, f3 = false;
        for (std::size_t i = 0; i < kBinMax; i += 4) {
            f0 |= slots[i] == a;
            f1 |= slots[i + 1] == a;
            f2 |= slots[i + 2] == a;
            f3 |= slots[i + 3] == a;
        }
        return f0 | f1 | f2 | f3;
    }
    static_assert(kBinMax % 4 == 0);
};

struct CacheEntry {
    std::atomic<Heap::State*> heap{nullptr};   // compared, never followed, unless it is the caller's
    // Allocations minus frees through this entry since it was claimed, and
    // their bytes as asked: the heap's statistics add them up.
    std::atomic<std::int64_t> objects{0}, bytes{0};
    Bin bins[kCachedClasses];
};

struct ThreadCache : boost::intrusive::list_base_hook<> {
    CacheEntry entries[kCacheEntries];
    unsigned next_victim = 0;
};

inline thread_local ThreadCache* t_cache UHMM_TLS_IE = nullptr;
inline thread_local unsigned t_number UHMM_TLS_IE = ~0u;
inline std::atomic<unsigned> g_next_number{0};

// This thread's number: threads are numbered in the order they first
// allocate from any heap, and allocate from shard (number mod shards).
inline std::size_t thread_number() noexcept {
    if (t_number == ~0u) t_number = g_next_number.fetch_add(1, std::memory_order_relaxed) % 1024;
    return t_number;
}

// This thread's entry for `heap`, or nullptr when it has none yet.
inline CacheEntry* find_entry(const Heap::State* heap) noexcept {
    if (ThreadCache* tc = t_cache)
        for (auto& e : tc->entries)
            if (e.heap.load(std::memory_order_relaxed) == heap) return &e;
    return nullptr;
}

// This thread's entry for `heap`, claimed now (the least recent one given
// back if all are taken); nullptr when no memory for a cache could be had.
CacheEntry* claim_entry(Heap::State& heap) noexcept;

// A heap going away: its entries are cleared (their slots go with it).
void forget_heap(const Heap::State& heap) noexcept;

// What every thread's entries of `heap` hold: the objects and bytes they
// served, and the free slots in their bins.
struct CacheTotals {
    std::int64_t objects = 0, bytes = 0;
    std::uint64_t cached = 0;
};
CacheTotals cache_totals(const Heap::State& heap) noexcept;

}  // namespace uhmm::alloc
