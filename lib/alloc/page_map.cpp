// PageMap (page_map.hpp): first-fit runs of free pages in a chunk's bitmap.
#include "alloc/page_map.hpp"

#include <algorithm>
#include <bit>

namespace uhmm::alloc {

namespace {

// Scan `words` (inverted when `invert`) for the first set bit in [from, end).
std::size_t next_set(const std::uint64_t* words, bool invert, std::size_t from, std::size_t end) noexcept {
    if (from >= end) return end;
    std::size_t w = from / 64;
    std::uint64_t bits = (invert ? ~words[w] : words[w]) & (~std::uint64_t{0} << (from % 64));
    while (bits == 0) {
        if (++w * 64 >= end) return end;
        bits = invert ? ~words[w] : words[w];
    }
    const std::size_t at = w * 64 + static_cast<std::size_t>(std::countr_zero(bits));
    return at < end ? at : end;
}

}  // namespace

std::size_t PageMap::next_free(std::size_t from, std::size_t end) const noexcept {
    return next_set(used_.data(), true, from, end);
}

std::size_t PageMap::next_used(std::size_t from, std::size_t end) const noexcept {
    return next_set(used_.data(), false, from, end);
}

std::size_t PageMap::find(std::size_t n, std::size_t align) const noexcept {
    if (n == 0 || n > free_) return npos;
    std::size_t p = 0;
    while (true) {
        p = next_free(p, kChunkPages);
        p = (p + align - 1) & ~(align - 1);
        if (p + n > kChunkPages) return npos;
        const std::size_t used = next_used(p, p + n);
        if (used == p + n) return p;
        p = used + 1;
    }
}

template <class Op>
void PageMap::for_words(std::size_t first, std::size_t n, Op op) noexcept {
    for (std::size_t p = first, end = first + n; p < end;) {
        const std::size_t bit = p % 64, count = std::min<std::size_t>(64 - bit, end - p);
        const std::uint64_t mask = count == 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << count) - 1) << bit;
        op(p / 64, mask);
        p += count;
    }
}

std::size_t PageMap::take(std::size_t first, std::size_t n) noexcept {
    std::size_t cleaned = 0;
    for_words(first, n, [&](std::size_t w, std::uint64_t mask) {
        used_[w] |= mask;
        cleaned += static_cast<std::size_t>(std::popcount(dirty_[w] & mask));
        dirty_[w] &= ~mask;
    });
    free_ -= n;
    dirty_count_ -= cleaned;
    return cleaned;
}

void PageMap::give(std::size_t first, std::size_t n, bool dirty) noexcept {
    for_words(first, n, [&](std::size_t w, std::uint64_t mask) {
        used_[w] &= ~mask;
        if (dirty) dirty_[w] |= mask;
    });
    free_ += n;
    if (dirty) dirty_count_ += n;
}

PageMap::Run PageMap::take_dirty(std::size_t from) noexcept {
    if (dirty_count_ == 0) return {npos, 0};
    const std::size_t first = next_set(dirty_.data(), false, from, kChunkPages);
    if (first == kChunkPages) return {npos, 0};
    const std::size_t end = next_set(dirty_.data(), true, first, kChunkPages);
    take(first, end - first);
    return {first, end - first};
}

}  // namespace uhmm::alloc
