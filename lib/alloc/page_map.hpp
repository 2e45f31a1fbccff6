// PageMap: which pages of one chunk are given out (to a span or a run), one
// bit per page, in ordinary memory.
//
// First fit from the chunk's start keeps the used pages packed low, so the
// free tail of a chunk stays one long run for the next big request and a
// chunk whose objects all died becomes wholly free. Spans and runs are taken
// far less often than slots (a span holds 8 to 4096 objects), so a scan of
// 128 words at worst is cheap enough. Not thread-safe: the heap's page lock
// guards every chunk's map.
//
// A free page may also be dirty: it held a span or a run that emptied and
// still has its old contents (host or device) because the heap keeps a few
// MiB of such pages for reuse instead of an madvise per emptied span
// (pages.cpp). Taking a dirty page makes it clean again: its new owner never
// relies on zeroes, since allocators do not promise them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace uhmm::alloc {

inline constexpr std::size_t kChunkBytes = std::size_t{32} << 20;
inline constexpr std::size_t kChunkPages = kChunkBytes / 4096;

class PageMap {
public:
    static constexpr std::size_t npos = ~std::size_t{0};

    // The first page of the lowest run of `n` free pages whose first page is
    // a multiple of `align` pages (a power of two), or npos.
    std::size_t find(std::size_t n, std::size_t align) const noexcept;
    // Mark [first, first + n) used / free; the caller knows they were the
    // other. take() returns how many of them were dirty (now clean); give()
    // marks them dirty when `dirty`.
    std::size_t take(std::size_t first, std::size_t n) noexcept;
    void give(std::size_t first, std::size_t n, bool dirty = false) noexcept;
    // Take the next run of dirty pages at or after `from` (used from now
    // on, clean): its first page and length, or {npos, 0} when none is left.
    struct Run {
        std::size_t first, pages;
    };
    Run take_dirty(std::size_t from) noexcept;

    std::size_t free_pages() const noexcept { return free_; }
    std::size_t dirty_pages() const noexcept { return dirty_count_; }
    bool empty() const noexcept { return free_ == kChunkPages; }

private:
    static constexpr std::size_t kWords = kChunkPages / 64;
    // The first page at or after `from` (and before `end`) that is free /
    // used; `end` when there is none.
    std::size_t next_free(std::size_t from, std::size_t end) const noexcept;
    std::size_t next_used(std::size_t from, std::size_t end) const noexcept;
    // Apply `op(word, mask)` to the words covering [first, first + n).
    template <class Op>
    static void for_words(std::size_t first, std::size_t n, Op op) noexcept;

    std::array<std::uint64_t, kWords> used_{};
    std::array<std::uint64_t, kWords> dirty_{};   // a subset of the free pages
    std::size_t free_ = kChunkPages;
    std::size_t dirty_count_ = 0;
};

}  // namespace uhmm::alloc
