// ChunkTable (chunk.hpp): leaves are made on first use and kept until the
// heap goes, so a lock-free reader never sees one freed.
#include "alloc/chunk.hpp"

#include <new>
#include <system_error>

namespace uhmm::alloc {

ChunkTable::~ChunkTable() {
    for (auto& leaf : root_) delete leaf.load(std::memory_order_relaxed);
}

std::error_code ChunkTable::insert(Chunk& c) noexcept {
    const std::uintptr_t a = c.start();
    if (a >> kAddressBits) return std::make_error_code(std::errc::result_out_of_range);
    const std::uintptr_t i = a / kChunkBytes;
    auto& slot = root_[i >> kLeafBits];
    Leaf* leaf = slot.load(std::memory_order_relaxed);
    if (!leaf) {
        leaf = new (std::nothrow) Leaf{};
        if (!leaf) return std::make_error_code(std::errc::not_enough_memory);
        slot.store(leaf, std::memory_order_release);
    }
    (*leaf)[i & (kLeafSize - 1)].store(&c, std::memory_order_release);
    return {};
}

void ChunkTable::erase(const Chunk& c) noexcept {
    const std::uintptr_t i = c.start() / kChunkBytes;
    if (Leaf* leaf = root_[i >> kLeafBits].load(std::memory_order_relaxed))
        (*leaf)[i & (kLeafSize - 1)].store(nullptr, std::memory_order_release);
}

}  // namespace uhmm::alloc
