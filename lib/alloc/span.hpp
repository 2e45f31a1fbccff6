// Span: a run of pages of a chunk, either carved into equal slots of one
// size class or given whole to one object (a "run"). The heap's view of an
// object is a bit in its span's bitmap: the slots themselves are never read
// or written, so no free list lives in the objects' memory and allocating or
// freeing never touches a page that may be on the device.
//
// Span records are never freed while their heap lives: a retired one goes to
// a spare list and comes back for the next span. So a stale or foreign
// pointer that reaches one through a chunk's page table reads a live record,
// and the state word (`kind`) tells whether it is what the caller thought:
//
//   free → a class list (carved under that list's lock and the page lock)
//        → returning (emptied, under the list's lock) → free (page lock);
//   free → run (page lock) → returning (page lock) → free (page lock).
//
// A slot span's kind names the class list that owns it: shard × kClasses +
// size class (heap_state.hpp says what shards are). A thread that reads
// kind == k while holding list k's lock therefore sees a span that stays
// list k's, with every field written under that lock.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

#include <boost/intrusive/list.hpp>

#include "alloc/size_classes.hpp"

namespace uhmm::alloc {

struct Chunk;

inline constexpr std::size_t kMaxShards = 16;
inline constexpr std::uint16_t kSlotKinds = kMaxShards * kClasses;   // class lists: [0, kSlotKinds)
inline constexpr std::uint16_t kSpanRun = kSlotKinds;                // one object
inline constexpr std::uint16_t kSpanReturning = kSlotKinds + 1;      // pages on their way back
inline constexpr std::uint16_t kSpanFree = kSlotKinds + 2;           // a spare record

struct Span {
    boost::intrusive::list_member_hook<> hook;   // in its class's list while it has free slots
    std::atomic<std::uint16_t> kind{kSpanFree};  // a class list, or one of kSpan*
    Chunk* chunk = nullptr;
    std::uintptr_t start = 0;                    // address of the first page
    std::uint32_t first_page = 0, pages = 0;     // within the chunk
    std::uint32_t size = 0;                      // a slot's bytes (a run: the object's bytes, as asked)
    std::uint32_t cls = 0;                       // the size class (slot spans)
    std::uint32_t slots = 0, used = 0;
    std::uint32_t hint = 0;                      // no free slot below word `hint`
    std::uint64_t bits[kMaxSlots / 64];          // 1: slot in use (and the words' bits past `slots`)

    std::size_t bytes() const noexcept { return std::size_t{pages} * kPage; }
    bool full() const noexcept { return used == slots; }
    bool contains(std::uintptr_t a) const noexcept { return a >= start && a - start < bytes(); }

    // The slots of class `c`, all free.
    void init_slots(std::size_t c) noexcept {
        cls = static_cast<std::uint32_t>(c);
        size = kClassTable[c].size;
        slots = kClassTable[c].slots;
        const std::uint32_t count = slots;
        used = hint = 0;
        const std::size_t words = (count + 63) / 64;
        for (std::size_t w = 0; w < words; ++w) bits[w] = 0;
        if (count % 64) bits[words - 1] = ~std::uint64_t{0} << (count % 64);
    }

    // A free slot, now used (the span must not be full).
    std::uintptr_t take() noexcept {
        std::uint32_t w = hint;
        while (bits[w] == ~std::uint64_t{0}) ++w;
        const auto bit = static_cast<std::uint32_t>(std::countr_one(bits[w]));
        bits[w] |= std::uint64_t{1} << bit;
        hint = w;
        ++used;
        return start + std::uintptr_t{w * 64 + bit} * size;
    }

    // The slot that begins at `a` if it is in use, else -1 (not a slot's
    // start, past the last slot, or already free).
    long slot_at(std::uintptr_t a) const noexcept {
        if (!contains(a)) return -1;
        const long slot = slot_at_offset(cls, a - start);
        return slot >= 0 && (bits[slot / 64] >> (slot % 64)) & 1 ? slot : -1;
    }

    void give(std::size_t slot) noexcept {
        bits[slot / 64] &= ~(std::uint64_t{1} << (slot % 64));
        if (slot / 64 < hint) hint = static_cast<std::uint32_t>(slot / 64);
        --used;
    }
};

using SpanList = boost::intrusive::list<
    Span, boost::intrusive::member_hook<Span, boost::intrusive::list_member_hook<>, &Span::hook>,
    boost::intrusive::constant_time_size<false>>;

}  // namespace uhmm::alloc
