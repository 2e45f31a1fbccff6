// The device-page allocator (see page_allocator.hpp for its shape).
//
// Locking: a page's free-list link and flags, a chunk's list, bump and nfree,
// and a shard's chunk list are touched only under that shard's lock. A page's
// refcount and owner are atomics, so get/put never lock until the last put
// gives the page back. Counters are relaxed atomics; a shard's `free` is
// written under its lock and read without it, only to skip empty shards.
// Growth holds growth_ while it maps, then publishes capacity (release)
// before the new pages become reachable from a shard.
#include "devmem/page_allocator.hpp"

#include <algorithm>
#include <bit>
#include <cassert>
#include <limits>
#include <thread>

namespace uhmm::devmem {

namespace {

// How many chunks of a shard alloc_run looks at for a run before it gives up
// on that shard: bounded, so that a fragmented arena costs O(1) per call.
constexpr std::size_t kRunScan = 16;

unsigned shard_count() {
    const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
    return std::min(64u, std::bit_ceil(std::max(2u, 2 * cpus)));
}

}  // namespace

Result<std::unique_ptr<PageAllocator>> PageAllocator::create(std::size_t limit_chunks, std::size_t mapped,
                                                             MapChunk map_chunk, OnFree on_free) {
    if (limit_chunks == 0 || mapped > limit_chunks ||
        limit_chunks * kPagesPerChunk > std::size_t{std::numeric_limits<PageIndex>::max()} + 1) {
        return errno_code(EINVAL);
    }
    std::unique_ptr<PageAllocator> a(
        new PageAllocator(limit_chunks, mapped, std::move(map_chunk), std::move(on_free)));
    if (auto ec = a->pages_.reserve(limit_chunks * kPagesPerChunk)) return ec;
    if (auto ec = a->chunks_.reserve(limit_chunks)) return ec;
    if (auto ec = a->grow_to(mapped)) return ec;
    return a;
}

PageAllocator::PageAllocator(std::size_t limit_chunks, std::size_t mapped, MapChunk map_chunk, OnFree on_free)
    : limit_chunks_(limit_chunks),
      shard_mask_(shard_count() - 1),
      mapped_(mapped),
      map_chunk_(std::move(map_chunk)),
      on_free_(std::move(on_free)),
      shards_(new Shard[shard_mask_ + 1]) {}

PageAllocator::~PageAllocator() = default;

PageMeta* PageAllocator::meta(PageIndex page) noexcept {
    return page < capacity_.load(std::memory_order_acquire) ? &pages_[page] : nullptr;
}

const PageMeta* PageAllocator::meta(PageIndex page) const noexcept {
    return page < capacity_.load(std::memory_order_acquire) ? &pages_[page] : nullptr;
}

// Threads are spread over shards in the order they first allocate; a thread
// keeps its shard, so its pages and its frees mostly stay on one lock.
unsigned PageAllocator::home_shard() const noexcept {
    static std::atomic<unsigned> next{0};
    thread_local const unsigned slot = next.fetch_add(1, std::memory_order_relaxed);
    return slot & shard_mask_;
}

// ---- taking pages out of shards ---------------------------------------------------

void PageAllocator::take_from(Shard& shard, Chunk& chunk, std::size_t pages) {
    chunk.nfree = static_cast<std::uint16_t>(chunk.nfree - pages);
    if (chunk.nfree == 0) shard.chunks.erase(shard.chunks.iterator_to(chunk));
    shard.free.store(shard.free.load(std::memory_order_relaxed) - pages, std::memory_order_relaxed);
    free_.fetch_sub(pages, std::memory_order_relaxed);
}

std::optional<PageIndex> PageAllocator::take_one(Shard& shard) {
    if (shard.free.load(std::memory_order_relaxed) == 0) return std::nullopt;
    std::lock_guard guard(shard.lock);
    if (shard.chunks.empty()) return std::nullopt;
    Chunk& chunk = shard.chunks.front();
    PageIndex page;
    if (!chunk.free.empty()) {
        PageMeta& m = chunk.free.front();
        chunk.free.pop_front();
        page = static_cast<PageIndex>(pages_.index_of(m));
    } else {
        page = static_cast<PageIndex>(chunks_.index_of(chunk) * kPagesPerChunk + chunk.bump++);
    }
    pages_[page].flags = 0;
    take_from(shard, chunk, 1);
    return page;
}

// Wholly free chunks sit at the back of the list: look there first.
std::optional<PageIndex> PageAllocator::take_run(Shard& shard, std::size_t want) {
    if (shard.free.load(std::memory_order_relaxed) < want) return std::nullopt;
    std::lock_guard guard(shard.lock);
    std::size_t scanned = 0;
    for (auto it = shard.chunks.rbegin(); it != shard.chunks.rend() && scanned < kRunScan; ++it, ++scanned) {
        Chunk& chunk = *it;
        if (kPagesPerChunk - chunk.bump < want) continue;
        const auto first = static_cast<PageIndex>(chunks_.index_of(chunk) * kPagesPerChunk + chunk.bump);
        for (std::size_t k = 0; k < want; ++k) pages_[first + k].flags = 0;
        chunk.bump = static_cast<std::uint16_t>(chunk.bump + want);
        take_from(shard, chunk, want);
        return first;
    }
    return std::nullopt;
}

std::optional<PageIndex> PageAllocator::take_any(unsigned home) {
    for (unsigned i = 0; i <= shard_mask_; ++i) {
        if (auto page = take_one(shards_[(home + i) & shard_mask_])) return page;
    }
    return std::nullopt;
}

std::optional<PageIndex> PageAllocator::take_run_any(unsigned home, std::size_t want) {
    for (unsigned i = 0; i <= shard_mask_; ++i) {
        if (auto first = take_run(shards_[(home + i) & shard_mask_], want)) return first;
    }
    return std::nullopt;
}

// ---- giving pages back -----------------------------------------------------------

void PageAllocator::give_back(PageIndex page) noexcept {
    Chunk& chunk = chunks_[page / kPagesPerChunk];
    Shard& shard = shards_[chunk.shard];
    PageMeta& m = pages_[page];
    std::lock_guard guard(shard.lock);
    assert(!(m.flags & PageMeta::kOnFreeList) && "device page freed twice");
    m.flags = PageMeta::kOnFreeList;
    chunk.free.push_front(m);
    ++chunk.nfree;
    if (chunk.nfree == 1) {
        shard.chunks.push_front(chunk);
    } else if (chunk.nfree == kPagesPerChunk) {
        // Whole again: forget the list (O(1) with normal_link hooks) and offer
        // the chunk as one run, from the back of the list.
        chunk.free.clear();
        chunk.bump = 0;
        shard.chunks.erase(shard.chunks.iterator_to(chunk));
        shard.chunks.push_back(chunk);
    }
    shard.free.store(shard.free.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    free_.fetch_add(1, std::memory_order_relaxed);
}

void PageAllocator::hand_out(std::span<const PageIndex> pages, std::uint16_t owner) noexcept {
    for (const PageIndex page : pages) {
        pages_[page].owner.store(owner, std::memory_order_relaxed);
        pages_[page].refs.store(1, std::memory_order_release);
    }
    const std::size_t used = used_.fetch_add(pages.size(), std::memory_order_relaxed) + pages.size();
    std::size_t high = high_water_.load(std::memory_order_relaxed);
    while (used > high && !high_water_.compare_exchange_weak(high, used, std::memory_order_relaxed)) {
    }
}

// ---- growth -----------------------------------------------------------------------

// Grow only if the free pages (which others may have just added) are fewer
// than `needed`; an empty return means "try again".
std::error_code PageAllocator::grow_for(std::size_t needed, unsigned home) {
    std::lock_guard guard(growth_);
    if (free_.load(std::memory_order_relaxed) >= needed) return {};
    return add_chunk_locked(home);
}

std::error_code PageAllocator::add_chunk_locked(unsigned shard_index) {
    const std::size_t n = nchunks_.load(std::memory_order_relaxed);
    if (n == limit_chunks_) return Errc::arena_full;
    if (n >= mapped_) {
        if (auto ec = map_chunk_(n)) return ec;
        mapped_ = n + 1;
    }
    pages_.construct_next(kPagesPerChunk);
    chunks_.construct_next(1);
    Chunk& chunk = chunks_[n];
    chunk.shard = static_cast<std::uint16_t>(shard_index & shard_mask_);
    chunk.nfree = kPagesPerChunk;
    // Capacity first: a page is never reachable before get/put accept it.
    nchunks_.store(n + 1, std::memory_order_release);
    capacity_.store((n + 1) * kPagesPerChunk, std::memory_order_release);
    Shard& shard = shards_[chunk.shard];
    std::lock_guard guard(shard.lock);
    shard.chunks.push_back(chunk);
    shard.free.store(shard.free.load(std::memory_order_relaxed) + kPagesPerChunk, std::memory_order_relaxed);
    free_.fetch_add(kPagesPerChunk, std::memory_order_relaxed);
    return {};
}

std::error_code PageAllocator::grow_to(std::size_t chunks) {
    if (chunks > limit_chunks_) return Errc::arena_full;
    std::lock_guard guard(growth_);
    // Round-robin, so that every shard starts with memory of its own.
    for (std::size_t n = nchunks_.load(std::memory_order_relaxed); n < chunks; ++n) {
        if (auto ec = add_chunk_locked(static_cast<unsigned>(n))) return ec;
    }
    return {};
}

// ---- the public operations ----------------------------------------------------------

Result<PageIndex> PageAllocator::alloc(std::uint16_t owner) {
    const unsigned home = home_shard();
    for (;;) {
        if (auto page = take_any(home)) {
            hand_out({&*page, 1}, owner);
            return *page;
        }
        if (auto ec = grow_for(1, home)) {
            failures_.fetch_add(1, std::memory_order_relaxed);
            return ec;
        }
    }
}

Result<std::size_t> PageAllocator::alloc_run(std::size_t n, std::uint16_t owner, std::span<PageIndex> out) {
    if (n == 0) return std::size_t{0};
    if (out.size() < n) return errno_code(EINVAL);
    if (n > limit_chunks_ * kPagesPerChunk) {
        failures_.fetch_add(1, std::memory_order_relaxed);
        return make_error_code(Errc::arena_full);
    }
    const unsigned home = home_shard();
    std::size_t got = 0;
    // Contiguous pieces of up to a chunk, from bump regions; grow for them
    // only when the free pages would not cover the request anyway. Bounded,
    // since other threads may take what growth adds.
    for (int grown = 0; got < n && grown < 4;) {
        const std::size_t want = std::min(n - got, kPagesPerChunk);
        if (auto first = take_run_any(home, want)) {
            for (std::size_t k = 0; k < want; ++k) out[got + k] = static_cast<PageIndex>(*first + k);
            got += want;
            continue;
        }
        if (free_.load(std::memory_order_relaxed) >= n - got) break;
        if (grow_for(n - got, home)) break;
        ++grown;
    }
    // The rest scattered, page by page.
    while (got < n) {
        if (auto page = take_any(home)) {
            out[got++] = *page;
            continue;
        }
        if (auto ec = grow_for(1, home)) {
            for (std::size_t k = 0; k < got; ++k) give_back(out[k]);
            failures_.fetch_add(1, std::memory_order_relaxed);
            return ec;
        }
    }
    hand_out(out.first(n), owner);
    std::size_t runs = 1;
    for (std::size_t k = 1; k < n; ++k) runs += out[k] != out[k - 1] + 1;
    (runs == 1 ? runs_contiguous_ : runs_scattered_).fetch_add(1, std::memory_order_relaxed);
    return runs;
}

std::error_code PageAllocator::get(PageIndex page) noexcept {
    PageMeta* m = meta(page);
    if (!m) return Errc::bad_page;
    std::uint32_t refs = m->refs.load(std::memory_order_relaxed);
    do {
        if (refs == 0) return Errc::page_not_allocated;
        if (refs == std::numeric_limits<std::uint32_t>::max()) return Errc::refcount_overflow;
    } while (!m->refs.compare_exchange_weak(refs, refs + 1, std::memory_order_acquire,
                                            std::memory_order_relaxed));
    return {};
}

std::error_code PageAllocator::put(PageIndex page) noexcept {
    PageMeta* m = meta(page);
    if (!m) return Errc::bad_page;
    std::uint32_t refs = m->refs.load(std::memory_order_relaxed);
    do {
        if (refs == 0) return Errc::page_not_allocated;
    } while (!m->refs.compare_exchange_weak(refs, refs - 1, std::memory_order_acq_rel,
                                            std::memory_order_relaxed));
    if (refs == 1) {
        // The last reference: the owner hears of it before anyone can
        // allocate the page again (dev_pagemap_ops.page_free).
        if (on_free_) on_free_(page, m->owner.load(std::memory_order_relaxed));
        m->owner.store(0, std::memory_order_relaxed);
        used_.fetch_sub(1, std::memory_order_relaxed);
        give_back(page);
    }
    return {};
}

std::uint32_t PageAllocator::refcount(PageIndex page) const noexcept {
    const PageMeta* m = meta(page);
    return m ? m->refs.load(std::memory_order_acquire) : 0;
}

std::uint16_t PageAllocator::owner(PageIndex page) const noexcept {
    const PageMeta* m = meta(page);
    return m ? m->owner.load(std::memory_order_relaxed) : 0;
}

PageAllocator::Counters PageAllocator::counters() const noexcept {
    constexpr auto r = std::memory_order_relaxed;
    return {capacity_.load(r), used_.load(r), high_water_.load(r), failures_.load(r),
            nchunks_.load(r), runs_contiguous_.load(r), runs_scattered_.load(r)};
}

}  // namespace uhmm::devmem
