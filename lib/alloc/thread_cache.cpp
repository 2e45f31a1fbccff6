// The registry of threads' caches (thread_cache.hpp): claiming an entry,
// giving a thread's slots back when it ends, clearing a heap's entries when
// the heap goes, and adding up what the caches hold for stats().
#include "alloc/thread_cache.hpp"

#include <pthread.h>

#include <algorithm>
#include <iterator>
#include <mutex>
#include <new>

#include "alloc/heap_state.hpp"

namespace uhmm::alloc {

namespace {

void thread_ended(void* cache);

struct Registry {
    std::mutex lock;
    boost::intrusive::list<ThreadCache, boost::intrusive::constant_time_size<false>> caches;
    pthread_key_t key{};
    bool keyed = false;   // without a key no thread could give its slots back: no caches then
    Registry() { keyed = pthread_key_create(&key, &thread_ended) == 0; }
};

// Never destroyed: threads may end while the process runs its exit handlers.
Registry& registry() {
    static auto* r = new Registry();
    return *r;
}

// Under the registry's lock: the entry's slots and counts back to its heap.
void give_back(CacheEntry& e) noexcept {
    if (Heap::State* heap = e.heap.load(std::memory_order_relaxed)) heap->drop_entry(e);
}

void thread_ended(void* cache) {
    auto* tc = static_cast<ThreadCache*>(cache);
    Registry& r = registry();
    {
        std::lock_guard lock(r.lock);
        for (auto& e : tc->entries) give_back(e);
        r.caches.erase(r.caches.iterator_to(*tc));
    }
    t_cache = nullptr;
    base::InternalScope internal;
    delete tc;
}

}  // namespace

CacheEntry* claim_entry(Heap::State& heap) noexcept {
    Registry& r = registry();
    if (!r.keyed) return nullptr;
    ThreadCache* tc = t_cache;
    if (!tc) {
        base::InternalScope internal;   // from the real malloc, even under the preload library
        tc = new (std::nothrow) ThreadCache;
        if (!tc) return nullptr;
        if (pthread_setspecific(r.key, tc) != 0) {
            delete tc;
            return nullptr;
        }
        std::lock_guard lock(r.lock);
        r.caches.push_back(*tc);
        t_cache = tc;
    }
    std::lock_guard lock(r.lock);
    CacheEntry* e = nullptr;
    for (auto& candidate : tc->entries)
        if (!candidate.heap.load(std::memory_order_relaxed)) {
            e = &candidate;
            break;
        }
    if (!e) {
        e = &tc->entries[tc->next_victim++ % kCacheEntries];
        give_back(*e);
    }
    for (auto& bin : e->bins) {
        bin.count.store(0, std::memory_order_relaxed);
        std::fill(std::begin(bin.slots), std::end(bin.slots), 0);
    }
    e->objects.store(0, std::memory_order_relaxed);
    e->bytes.store(0, std::memory_order_relaxed);
    e->heap.store(&heap, std::memory_order_relaxed);
    return e;
}

void forget_heap(const Heap::State& heap) noexcept {
    Registry& r = registry();
    std::lock_guard lock(r.lock);
    for (auto& tc : r.caches)
        for (auto& e : tc.entries)
            if (e.heap.load(std::memory_order_relaxed) == &heap) e.heap.store(nullptr, std::memory_order_relaxed);
}

CacheTotals cache_totals(const Heap::State& heap) noexcept {
    Registry& r = registry();
    CacheTotals t;
    std::lock_guard lock(r.lock);
    for (auto& tc : r.caches)
        for (auto& e : tc.entries) {
            if (e.heap.load(std::memory_order_relaxed) != &heap) continue;
            t.objects += e.objects.load(std::memory_order_relaxed);
            t.bytes += e.bytes.load(std::memory_order_relaxed);
            for (const auto& bin : e.bins) t.cached += bin.count.load(std::memory_order_relaxed);
        }
    return t;
}

}  // namespace uhmm::alloc
