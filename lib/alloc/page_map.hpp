// PageMap: which pages of one chunk are given out (to a span or a run), one
// bit per page, in ordinary memory.
//
// First fit from the chunk's start keeps the used pages packed low, so the
// free tail of a chunk stays one long run for the next big request and a
// chunk whose objects all died becomes wholly free. Spans and runs are taken
// far less often than slots (a span holds 8 to 4096 objects), so a scan of
// 128 words at worst is cheap enough. Not thread-safe: the heap's page lock
// guards every chunk's map.
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
    // Mark [first, first + n) used / free; the caller knows they were the other.
    void take(std::size_t first, std::size_t n) noexcept;
    void give(std::size_t first, std::size_t n) noexcept;

    std::size_t free_pages() const noexcept { return free_; }
    bool empty() const noexcept { return free_ == kChunkPages; }

private:
    static constexpr std::size_t kWords = kChunkPages / 64;
    // The first page at or after `from` (and before `end`) that is free /
    // used; `end` when there is none.
    std::size_t next_free(std::size_t from, std::size_t end) const noexcept;
    std::size_t next_used(std::size_t from, std::size_t end) const noexcept;
    void flip(std::size_t first, std::size_t n) noexcept;

    std::array<std::uint64_t, kWords> used_{};
    std::size_t free_ = kChunkPages;
};

}  // namespace uhmm::alloc
