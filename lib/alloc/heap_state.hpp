// Heap::State: what a uhmm::Heap keeps, all of it in ordinary memory.
//
// Three kinds of object, three paths (heap.cpp picks one):
//   small (≤ kSmallMax at alignment ≤ 4096): a slot of a size class's span
//     (small.cpp), under the lock of that class in the thread's shard, or
//     without a lock through the thread's cache (≤ 4 KiB: cached.cpp);
//   medium (up to the large threshold, or aligned beyond a page): a run of
//     pages of a chunk for the object alone (runs.cpp);
//   large (the threshold and up, or aligned beyond a chunk): a managed range
//     of its own (large.cpp).
// Spans and runs are carved from chunks and given back to them under the
// page lock (pages.cpp).
//
// Shards: each size class has one span list and lock per shard, and a thread
// allocates from shard (its number mod shards), threads numbered in the
// order they first allocate, one shard per CPU up to kMaxShards. Two threads
// then seldom meet on a lock (a contended mutex costs ten times an
// uncontended one), and a thread's number is a plain integer: nothing a
// thread holds can dangle when a heap goes. A free goes to the list that
// owns the span, whichever thread frees.
//
// Lock order: the caches' registry → a class list's lock → the page lock →
// the runtime's locks (a new chunk is allocated from the runtime under the
// page lock). The large lock is taken alone. madvise, which waits until the
// runtime's monitor has read its REMOVE event, is called with no list or
// page lock held (a thread that ends, or evicts a cache entry, holds the
// registry's lock meanwhile), and nothing here ever touches the objects'
// memory, so a lock holder never takes a page fault.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <uhmm/heap.hpp>

#include "alloc/chunk.hpp"
#include "alloc/size_classes.hpp"
#include "alloc/span.hpp"

namespace uhmm {

namespace alloc {

// One size class in one shard: its spans that have a free slot, partly used ones first
// and at most one wholly empty span last, kept so that a class whose last
// object comes and goes does not give pages back and take them again.
struct alignas(64) SizeClass {
    std::mutex lock;
    SpanList spans;
    bool has_empty = false;          // the last span of `spans` is empty
    // Objects allocated minus freed here, and their sizes as asked (those
    // that go through threads' caches are counted in the caches' entries).
    std::int64_t objects = 0, bytes = 0;
};

struct Bin;
struct CacheEntry;

}  // namespace alloc

struct Heap::State {
    explicit State(Runtime& runtime);
    ~State();

    // small.cpp: a slot of class list `list` (shard × kClasses + class).
    Result<void*> alloc_slot(std::size_t list, std::size_t bytes) noexcept;
    void free_slot(alloc::Span& s, std::size_t list, std::uintptr_t a, std::size_t bytes) noexcept;
    // Under lists[list].lock: a slot taken (a span carved when none has
    // room), a slot given back (kept; its span now to be retired by the
    // caller once the lock is dropped; or not a live slot of that list).
    enum class Given { kept, retire, bad };
    Result<std::uintptr_t> take_slot(std::size_t list) noexcept;
    Given give_slot(std::size_t list, alloc::Span& s, std::uintptr_t a) noexcept;
    // cached.cpp: small objects through the calling thread's cache entry.
    std::size_t list_for(std::size_t cls) const noexcept;   // the class's list in this thread's shard
    Result<void*> cached_alloc(alloc::CacheEntry& e, std::size_t cls, std::size_t bytes) noexcept;
    void cached_free(alloc::CacheEntry& e, alloc::Span& s, std::size_t list, std::uintptr_t a,
                     std::size_t bytes) noexcept;
    std::error_code refill(alloc::Bin& bin, std::size_t cls) noexcept;
    void flush_bin(alloc::Bin& bin, std::size_t k) noexcept;   // the oldest k slots back to their spans
    void flush_entry(alloc::CacheEntry& e) noexcept;           // every bin, by the owning thread
    // Under the registry's lock: the entry's slots back, its counts folded
    // into folded_*, the entry cleared.
    void drop_entry(alloc::CacheEntry& e) noexcept;
    // runs.cpp
    Result<void*> alloc_run(std::size_t bytes, std::size_t alignment) noexcept;
    void free_run(alloc::Span& s, std::uintptr_t a) noexcept;
    // pages.cpp: `pages` pages aligned to `align_pages` for a span of `kind`
    // (a class list or kSpanRun; a run records `run_bytes`). The record is
    // published (kind set, then the chunk's page owners) before it returns.
    Result<alloc::Span*> carve(std::size_t pages, std::size_t align_pages, std::uint16_t kind,
                               std::size_t run_bytes) noexcept;
    // A span already marked returning (no lock held): its pages go back to
    // its chunk, dirty (kept for reuse); a chunk left empty when another
    // already is goes back to the runtime; more than kDirtyBudget dirty
    // pages are purged.
    void retire(alloc::Span& s, bool run) noexcept;
    // Every dirty page back to the runtime (MADV_DONTNEED), no lock held.
    void purge() noexcept;
    // Under page_lock: a new chunk from the runtime (in the table and the
    // list), a span record, and a chunk that just emptied: kept when it is
    // the only empty one, else taken out (its start returned, for the
    // caller to release once the lock is dropped; 0 when kept).
    Result<alloc::Chunk*> add_chunk() noexcept;
    Result<alloc::Span*> span_record() noexcept;
    // A dropped chunk's dirty pages are forgotten (they go with its mapping).
    std::uintptr_t drop_if_spare(alloc::Chunk& c) noexcept;
    // The runtime's release of a dropped chunk (0: none), no lock held.
    void release_chunk(std::uintptr_t start) noexcept;
    // large.cpp
    Result<void*> alloc_large(std::size_t bytes, std::size_t alignment) noexcept;
    bool free_large(std::uintptr_t a) noexcept;   // false: not a large object of this heap
    bool owns_large(std::uintptr_t a) const noexcept;
    void release_all_large() noexcept;
    // heap.cpp: a deallocate() that is not of a live object of this heap.
    void bad_free(const void* p, const char* why) noexcept;

    Runtime& rt;
    const std::size_t large_min;   // objects this big or bigger get a range of their own
    const std::size_t shards;

    alloc::ChunkTable table;
    std::unique_ptr<alloc::SizeClass[]> lists;   // shards × kClasses, indexed by a span's kind

    // Under page_lock: chunks, their page maps, span records, the counters.
    mutable std::mutex page_lock;
    std::vector<alloc::Chunk*> chunks;                           // live, by address
    std::vector<std::unique_ptr<alloc::Chunk>> chunk_records;    // every record made
    std::vector<alloc::Chunk*> spare_chunks;
    std::deque<alloc::Span> span_records;                        // stable addresses
    std::vector<alloc::Span*> spare_spans;
    std::size_t empty_chunks = 0;
    std::size_t dirty_pages = 0;                                 // over all chunks' maps
    std::uint64_t spans = 0, span_pages = 0;                     // slot spans now
    std::uint64_t runs = 0, run_pages = 0, run_bytes = 0;        // run objects now
    std::atomic<std::uint64_t> pages_returned{0};

    mutable std::mutex large_lock;
    std::map<std::uintptr_t, std::size_t> large;                 // start → bytes (whole pages)
    std::uint64_t large_bytes = 0;

    std::atomic<std::uint64_t> bad_frees{0};
    std::atomic<std::int64_t> folded_objects{0}, folded_bytes{0};   // from entries given back
};

}  // namespace uhmm
