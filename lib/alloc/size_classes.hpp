// The heap's size classes: 16-byte steps up to 128 bytes, then four classes
// per doubling up to kSmallMax (32 KiB), spaced as jemalloc spaces them, so
// that rounding a request up to its class wastes at most a fifth of the slot
// beyond 128 bytes.
//
// Each class carves spans (page runs of a chunk) into equal slots. A span is
// at least kMinSpanBytes and holds at least kMinSlotsPerSpan slots, and its
// page count is picked so that the tail a span cannot use is at most 1/64 of
// it. Spans start on a page, so a slot's address is aligned to every power of
// two up to 4096 that divides its class size: that is how an aligned request
// is served (class_for picks the smallest class that is such a multiple).
//
// Everything here is computed at compile time; class_for is a few
// instructions on the allocation path.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace uhmm::alloc {

inline constexpr std::size_t kPage = 4096;
inline constexpr std::size_t kSmallMax = 32 * 1024;   // larger objects get page runs
inline constexpr std::size_t kClasses = 40;
inline constexpr std::size_t kMinSpanBytes = 64 * 1024;
inline constexpr std::size_t kMinSlotsPerSpan = 8;
inline constexpr std::size_t kMaxSlots = kMinSpanBytes / 16;   // the 16-byte class's span
inline constexpr std::size_t kNoClass = kClasses;

struct ClassInfo {
    std::uint32_t size = 0;         // bytes per slot
    std::uint32_t span_pages = 0;   // pages per span
    std::uint32_t slots = 0;        // slots per span
    std::uint64_t reciprocal = 0;   // ⌈2^40 / size⌉: offset in a span → slot without a division
};

namespace detail {

constexpr std::size_t class_size(std::size_t c) {
    if (c < 8) return 16 * (c + 1);
    const std::size_t k = 7 + (c - 8) / 4, j = (c - 8) % 4 + 1;   // 2^k + j * 2^(k-2)
    return (std::size_t{1} << k) + j * (std::size_t{1} << (k - 2));
}

// The fewest pages, from the minimum on, whose unusable tail is at most 1/64
// of the span (every class finds one within a few pages: checked below).
constexpr std::size_t span_pages(std::size_t size) {
    const std::size_t by_slots = (kMinSlotsPerSpan * size + kPage - 1) / kPage;
    std::size_t n = by_slots > kMinSpanBytes / kPage ? by_slots : kMinSpanBytes / kPage;
    while (n * kPage % size * 64 > n * kPage) ++n;
    return n;
}

constexpr std::array<ClassInfo, kClasses> make_table() {
    std::array<ClassInfo, kClasses> t{};
    for (std::size_t c = 0; c < kClasses; ++c) {
        const std::size_t size = class_size(c), pages = span_pages(size);
        t[c] = {static_cast<std::uint32_t>(size), static_cast<std::uint32_t>(pages),
                static_cast<std::uint32_t>(pages * kPage / size), ((std::uint64_t{1} << 40) + size - 1) / size};
    }
    return t;
}

}  // namespace detail

inline constexpr std::array<ClassInfo, kClasses> kClassTable = detail::make_table();

static_assert(kClassTable.back().size == kSmallMax);
static_assert(kClassTable.front().slots == kMaxSlots);
inline constexpr std::size_t kMaxSpanPages = 64;   // 8 slots of 32 KiB
// Offsets in a span stay below 2^18, so (offset × reciprocal) >> 40 is exact:
// the reciprocal's error adds less than 2^-22, and a quotient's fraction is
// 0 or at least 1/size ≥ 2^-15 away from the next integer.
static_assert(kMaxSpanPages * kPage <= (std::size_t{1} << 18));
static_assert([] {
    for (const auto& c : kClassTable)
        if (c.span_pages > kMaxSpanPages || c.slots < kMinSlotsPerSpan) return false;
    return true;
}());

// The slot of class `cls` that begins `offset` bytes into a span, or -1
// when no slot begins there.
constexpr long slot_at_offset(std::size_t cls, std::uintptr_t offset) noexcept {
    const ClassInfo& c = kClassTable[cls];
    const std::uintptr_t slot = (offset * c.reciprocal) >> 40;
    return slot * c.size == offset && slot < c.slots ? static_cast<long>(slot) : -1;
}

// The class of `size` bytes (1 ≤ size ≤ kSmallMax), alignment aside.
constexpr std::size_t class_index(std::size_t size) noexcept {
    if (size <= 128) return (size + 15) / 16 - 1;
    const std::size_t k = static_cast<std::size_t>(std::bit_width(size - 1)) - 1;   // 2^k < size ≤ 2^(k+1)
    const std::size_t step = std::size_t{1} << (k - 2);
    const std::size_t j = (size - (std::size_t{1} << k) + step - 1) / step;      // 1..4
    return 8 + (k - 7) * 4 + (j - 1);
}

// The smallest class whose slots hold `bytes` at `alignment` (a power of two
// up to kPage), or kNoClass when none does (the object needs a page run).
constexpr std::size_t class_for(std::size_t bytes, std::size_t alignment) noexcept {
    if (alignment > kPage) return kNoClass;
    if (alignment > 16) bytes = (bytes + alignment - 1) & ~(alignment - 1);
    if (bytes > kSmallMax) return kNoClass;
    std::size_t c = class_index(bytes);
    while (c < kClasses && kClassTable[c].size % alignment != 0) ++c;
    return c;
}

static_assert(class_index(1) == 0 && class_index(16) == 0 && class_index(17) == 1);
static_assert(kClassTable[class_index(129)].size == 160 && kClassTable[class_index(257)].size == 320);
static_assert(class_index(kSmallMax) == kClasses - 1);
static_assert(kClassTable[class_for(100, 64)].size == 128 && kClassTable[class_for(1, 4096)].size == 4096);
static_assert(kClassTable[class_for(5000, 2048)].size == 6144);

}  // namespace uhmm::alloc
