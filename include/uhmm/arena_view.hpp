// uhmm::devmem::ArenaView — how a copy engine sees a device-memory arena.
//
// The arena (lib/devmem) owns the memory; a copy engine (lib/migrate) only
// needs to know where device page N lives: at byte offset N * kPageSize of the
// arena's file (when it has one), of its runtime-private CPU mapping (when it
// has one), or of its GPU allocation. The application never maps any of these:
// device pages are CPU-unaddressable from its point of view, as ZONE_DEVICE
// private pages are in the kernel.
#pragma once

#include <cstddef>
#include <cstdint>

namespace uhmm::devmem {

inline constexpr std::size_t kPageSize = 4096;           // device page
inline constexpr std::size_t kChunkSize = 2u << 20;      // arena growth unit (one huge page)

enum class ArenaKind : std::uint8_t {
    memfd,     // shmem memfd: io_uring reads and writes work
    hugetlb,   // MFD_HUGETLB memfd: reads work, write(2)/io_uring WRITE are refused (EINVAL)
    numa,      // anonymous memory bound to a NUMA node (device-coherent): no file
    cuda,      // GPU memory from cudaMalloc: no file, no CPU mapping
};

struct ArenaView {
    ArenaKind kind = ArenaKind::memfd;
    int fd = -1;                    // backing file, -1 when none (numa, cuda)
    std::byte* base = nullptr;      // runtime-private CPU mapping, nullptr for cuda
    std::size_t size = 0;           // bytes currently usable (grows in kChunkSize steps)
    int cuda_device = -1;           // cuda only
    void* cuda_base = nullptr;      // cuda only: device pointer of offset 0

    // Byte offset of device page `index`.
    static constexpr std::uint64_t offset_of(std::uint32_t index) noexcept {
        return std::uint64_t{index} * kPageSize;
    }
};

}  // namespace uhmm::devmem
