// Chunks and the table that finds them.
//
// A chunk is a managed range of kChunkBytes, aligned to its size, that holds
// spans and runs. Aligned chunks make pointer → chunk a mask and a lookup in
// ChunkTable, a two-level radix table (as jemalloc's rtree) read without
// locks: deallocate() and owns() never wait for a chunk being added. Inside
// a chunk, `owners` maps each page to the span holding it.
//
// Chunk records, like span records, live as long as the heap: a released
// chunk's record is kept for the next chunk, so a lookup racing with the
// release reads a live record whose `base` says where it is now.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <system_error>

#include "alloc/page_map.hpp"
#include "alloc/span.hpp"

namespace uhmm::alloc {

struct Chunk {
    std::atomic<std::uintptr_t> base{0};   // 0 while the record is spare
    PageMap map;                           // under the heap's page lock
    std::array<std::atomic<Span*>, kChunkPages> owners{};   // inline: one dependent load less on free

    std::uintptr_t start() const noexcept { return base.load(std::memory_order_relaxed); }
    std::size_t page_of(std::uintptr_t a) const noexcept { return (a - start()) / kPage; }
    // The span holding page `page`, or nullptr.
    Span* owner(std::size_t page) const noexcept { return owners[page].load(std::memory_order_acquire); }
    void set_owner(const Span& s, Span* to) noexcept {
        for (std::size_t p = s.first_page; p < s.first_page + s.pages; ++p)
            owners[p].store(to, std::memory_order_release);
    }
};

// Address → chunk. insert and erase are called under the heap's page lock;
// find from any thread, any time.
class ChunkTable {
public:
    ChunkTable() = default;
    ~ChunkTable();
    ChunkTable(const ChunkTable&) = delete;
    ChunkTable& operator=(const ChunkTable&) = delete;

    // The live chunk holding `a`, or nullptr.
    Chunk* find(std::uintptr_t a) const noexcept {
        if (a >> kAddressBits) return nullptr;
        const std::uintptr_t i = a / kChunkBytes;
        const Leaf* leaf = root_[i >> kLeafBits].load(std::memory_order_acquire);
        if (!leaf) return nullptr;
        Chunk* c = (*leaf)[i & (kLeafSize - 1)].load(std::memory_order_acquire);
        return c && c->start() == (a & ~(kChunkBytes - 1)) ? c : nullptr;
    }
    // ERANGE when `c`'s address is beyond what the table covers, ENOMEM
    // when a leaf cannot be had: the caller then gives the chunk back.
    std::error_code insert(Chunk& c) noexcept;
    void erase(const Chunk& c) noexcept;

private:
    static constexpr unsigned kAddressBits = 48;   // user space on x86-64 and arm64 (without 5-level hints)
    static constexpr unsigned kLeafBits = 11;
    static constexpr std::size_t kLeafSize = std::size_t{1} << kLeafBits;
    static constexpr std::size_t kRootSize = (std::size_t{1} << kAddressBits) / kChunkBytes / kLeafSize;
    using Leaf = std::array<std::atomic<Chunk*>, kLeafSize>;

    std::array<std::atomic<Leaf*>, kRootSize> root_{};
};

}  // namespace uhmm::alloc
