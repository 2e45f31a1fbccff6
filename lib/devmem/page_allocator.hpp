// PageAllocator: 4 KiB device pages carved from 2 MiB chunks.
//
// Shaped after the kernel's ZONE_DEVICE page lifecycle (alloc → refcount →
// page_free) and after per-CPU page lists: chunks are spread over shards, each
// with its own lock; a thread allocates from its home shard and only visits
// the others (skipping empty ones without locking) when its own is empty, so
// the fast path never takes a global lock. A page freed goes back to the
// shard of its chunk. Growth (mapping a new chunk, milliseconds) serialises on
// a separate lock that the fast path never touches.
//
// Inside a chunk, pages above `bump` have not been handed out since the chunk
// was last entirely free: they form one contiguous run, which alloc_run()
// carves from. Freed pages go on the chunk's LIFO free list, which single
// allocations prefer; when every page of a chunk is free again its list is
// dropped and the whole chunk becomes one run again. alloc and free are O(1).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>

#include <boost/intrusive/list.hpp>

#include <uhmm/devmem.hpp>

#include "devmem/lazy_array.hpp"
#include "devmem/page_meta.hpp"

namespace uhmm::devmem {

class PageAllocator {
public:
    // Map chunk `index` (called in order, under the growth lock).
    using MapChunk = std::function<std::error_code(std::size_t index)>;
    // The last reference to `page` went; runs before the page is reusable.
    using OnFree = std::function<void(PageIndex page, std::uint16_t owner)>;

    struct Counters {
        std::size_t capacity_pages, used_pages, high_water_pages, alloc_failures, chunks,
            runs_contiguous, runs_scattered;
    };

    // `mapped` chunks are already mapped by the backend; they are handed to
    // the allocator now. Growth beyond them calls map_chunk.
    static Result<std::unique_ptr<PageAllocator>> create(std::size_t limit_chunks, std::size_t mapped,
                                                         MapChunk map_chunk, OnFree on_free);
    ~PageAllocator();

    Result<PageIndex> alloc(std::uint16_t owner);
    Result<std::size_t> alloc_run(std::size_t n, std::uint16_t owner, std::span<PageIndex> out);
    std::error_code get(PageIndex page) noexcept;
    std::error_code put(PageIndex page) noexcept;
    std::uint32_t refcount(PageIndex page) const noexcept;
    std::uint16_t owner(PageIndex page) const noexcept;

    std::error_code grow_to(std::size_t chunks);
    std::size_t capacity_pages() const noexcept { return capacity_.load(std::memory_order_acquire); }
    Counters counters() const noexcept;

private:
    struct Chunk {
        boost::intrusive::list_member_hook<> hook;   // in its shard's list while it has free pages
        PageFreeList free;                           // freed pages below `bump`
        std::uint16_t bump = 0;                      // [bump, 512) never handed out since whole
        std::uint16_t nfree = 0;                     // free pages: the list plus [bump, 512)
        std::uint16_t shard = 0;                     // fixed when the chunk is mapped
    };
    // Per 2 MiB chunk, on top of 16 bytes per page: 32 / 512 = 1/16 byte per page.
    static_assert(sizeof(Chunk) == 32);
    using ChunkList = boost::intrusive::list<
        Chunk, boost::intrusive::member_hook<Chunk, boost::intrusive::list_member_hook<>, &Chunk::hook>,
        boost::intrusive::constant_time_size<false>>;

    // Chunks with free pages first, wholly free chunks last (kept for runs).
    struct alignas(64) Shard {
        std::mutex lock;
        ChunkList chunks;
        std::atomic<std::size_t> free{0};            // written under `lock`, read without it
    };

    PageAllocator(std::size_t limit_chunks, std::size_t mapped, MapChunk map_chunk, OnFree on_free);

    unsigned home_shard() const noexcept;
    std::optional<PageIndex> take_one(Shard& shard);
    std::optional<PageIndex> take_run(Shard& shard, std::size_t want);
    std::optional<PageIndex> take_any(unsigned home);
    std::optional<PageIndex> take_run_any(unsigned home, std::size_t want);
    void take_from(Shard& shard, Chunk& chunk, std::size_t pages);
    void give_back(PageIndex page) noexcept;
    void hand_out(std::span<const PageIndex> pages, std::uint16_t owner) noexcept;
    std::error_code grow_for(std::size_t needed, unsigned home);
    std::error_code add_chunk_locked(unsigned shard);
    PageMeta* meta(PageIndex page) noexcept;
    const PageMeta* meta(PageIndex page) const noexcept;

    const std::size_t limit_chunks_;
    const unsigned shard_mask_;
    std::size_t mapped_;                             // chunks the backend has mapped (growth lock)
    MapChunk map_chunk_;
    OnFree on_free_;
    // Declared so that the shards' lists go first, then the chunks they link.
    LazyArray<PageMeta> pages_;
    LazyArray<Chunk> chunks_;
    std::unique_ptr<Shard[]> shards_;
    std::mutex growth_;

    std::atomic<std::size_t> nchunks_{0};
    std::atomic<std::size_t> capacity_{0};
    std::atomic<std::size_t> free_{0};
    std::atomic<std::size_t> used_{0};
    std::atomic<std::size_t> high_water_{0};
    std::atomic<std::size_t> failures_{0};
    std::atomic<std::size_t> runs_contiguous_{0};
    std::atomic<std::size_t> runs_scattered_{0};
};

}  // namespace uhmm::devmem
