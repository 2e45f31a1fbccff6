// Reservation: the arena's address space, reserved once, filled chunk by chunk.
//
// view().base must not move while the arena grows (the copy engine keeps it),
// so arena_size of address space is reserved up front, PROT_NONE and
// MAP_NORESERVE (no memory, no commit charge), aligned to 2 MiB (hugetlb
// mappings must be, and THP needs it), and each chunk, mapped and populated
// elsewhere first, is moved over its slot with mremap when the arena grows
// (never a MAP_FIXED that can fail after unmapping the slot: see the .cpp). Populating happens at map time with
// MADV_POPULATE_WRITE, which reports a failure as an error where touching the
// memory would raise SIGBUS (hugetlb) — and first-touching shmem page by page
// is ~30x slower than populating it in one call on this platform.
#pragma once

#include <cstddef>
#include <system_error>

#include <uhmm/arena_view.hpp>
#include <uhmm/result.hpp>

namespace uhmm::devmem {

class Reservation {
public:
    static Result<Reservation> create(std::size_t size);
    Reservation() = default;
    Reservation(Reservation&& o) noexcept;
    Reservation& operator=(Reservation&& o) noexcept;
    ~Reservation() { reset(); }

    void reset() noexcept;                   // unmap everything
    std::byte* base() const noexcept { return base_; }
    std::size_t size() const noexcept { return size_; }
    std::byte* chunk(std::size_t index) const noexcept { return base_ + index * kChunkSize; }

    // Map [offset, offset + kChunkSize) of `fd` over chunk `index` (the file
    // is grown to cover it), optionally MADV_HUGEPAGE, and populate it. On
    // failure the slot is reserved again and the error returned.
    std::error_code map_file_chunk(std::size_t index, int fd, bool thp_advise);
    // Anonymous private memory over chunk `index`, not yet populated.
    std::error_code map_anon_chunk(std::size_t index);
    // Put chunk `index` back to reserved, PROT_NONE (undo a failed map).
    void unmap_chunk(std::size_t index) noexcept;

private:
    // Move the chunk-sized mapping `fresh` over slot `index` in one step; on
    // failure `fresh` is unmapped and the slot left as it was.
    std::error_code install(std::size_t index, void* fresh) noexcept;

    std::byte* base_ = nullptr;
    std::size_t size_ = 0;
};

// Fault in [at, at + len) writable, now; an error rather than SIGBUS.
std::error_code populate_write(std::byte* at, std::size_t len);

}  // namespace uhmm::devmem
