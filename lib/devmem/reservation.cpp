// The arena's reserved address space (see reservation.hpp).
#include "devmem/reservation.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <utility>

namespace uhmm::devmem {

namespace {

constexpr int kReserveFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

}  // namespace

Result<Reservation> Reservation::create(std::size_t size) {
    // Over-reserve by a chunk, then trim both ends to a 2 MiB-aligned base.
    const std::size_t span = size + kChunkSize;
    void* p = ::mmap(nullptr, span, PROT_NONE, kReserveFlags, -1, 0);
    if (p == MAP_FAILED) return last_errno();
    auto* raw = static_cast<std::byte*>(p);
    const auto addr = reinterpret_cast<std::uintptr_t>(raw);
    const std::size_t head = (kChunkSize - addr % kChunkSize) % kChunkSize;
    if (head) ::munmap(raw, head);
    const std::size_t tail = span - head - size;
    if (tail) ::munmap(raw + head + size, tail);
    Reservation r;
    r.base_ = raw + head;
    r.size_ = size;
    return r;
}

Reservation::Reservation(Reservation&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)), size_(std::exchange(o.size_, 0)) {}

Reservation& Reservation::operator=(Reservation&& o) noexcept {
    if (this != &o) {
        reset();
        base_ = std::exchange(o.base_, nullptr);
        size_ = std::exchange(o.size_, 0);
    }
    return *this;
}

void Reservation::reset() noexcept {
    if (base_) ::munmap(base_, size_);
    base_ = nullptr;
    size_ = 0;
}

void Reservation::unmap_chunk(std::size_t index) noexcept {
    ::mmap(chunk(index), kChunkSize, PROT_NONE, kReserveFlags | MAP_FIXED, -1, 0);
}

// Growing the arena must never open a hole in the address space. mmap with
// MAP_FIXED over the reservation unmaps the slot first and may then fail
// (hugetlb: no free huge page to reserve, ENOMEM), and between that failure
// and putting the reservation back, any other thread's mmap may be placed in
// the hole, which the restoring MAP_FIXED would then wipe out under it (a
// preloaded program crashed exactly so when the huge page pool ran dry). So
// the new memory is mapped and populated elsewhere first, and only then
// moved over the slot with mremap(MREMAP_FIXED), which replaces the slot in
// one step under the kernel's mmap lock.
std::error_code Reservation::install(std::size_t index, void* fresh) noexcept {
    if (::mremap(fresh, kChunkSize, kChunkSize, MREMAP_MAYMOVE | MREMAP_FIXED, chunk(index)) != MAP_FAILED) return {};
    const auto ec = last_errno();
    ::munmap(fresh, kChunkSize);
    return ec;
}

std::error_code Reservation::map_file_chunk(std::size_t index, int fd, bool thp_advise) {
    const auto offset = static_cast<off_t>(index * kChunkSize);
    struct stat st {};
    if (::fstat(fd, &st) != 0) return last_errno();
    if (st.st_size < offset + static_cast<off_t>(kChunkSize) &&
        ::ftruncate(fd, offset + static_cast<off_t>(kChunkSize)) != 0) {
        return last_errno();
    }
    // For hugetlb, MAP_SHARED reserves the huge pages here: ENOMEM when the
    // pool has none free, instead of SIGBUS later. The kernel aligns hugetlb
    // mappings, and shmem ones where huge pages are enabled, by itself; the
    // advice goes on before populating, and mremap keeps it.
    void* p = ::mmap(nullptr, kChunkSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
    if (p == MAP_FAILED) return last_errno();
    if (thp_advise) ::madvise(p, kChunkSize, MADV_HUGEPAGE);   // best effort: advice only
    if (auto ec = populate_write(static_cast<std::byte*>(p), kChunkSize)) {
        ::munmap(p, kChunkSize);
        return ec;
    }
    if (auto ec = install(index, p)) {
        // Kernels before 5.16 cannot mremap hugetlb mappings. The file's
        // pages now exist (populated above, kept by the file), so mapping
        // them straight over the slot needs no new reservation and cannot
        // fail for want of memory.
        if (ec != std::errc::invalid_argument) return ec;
        p = ::mmap(chunk(index), kChunkSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, offset);
        if (p == MAP_FAILED) {
            const auto err = last_errno();
            unmap_chunk(index);
            return err;
        }
        if (thp_advise) ::madvise(p, kChunkSize, MADV_HUGEPAGE);
    }
    return {};
}

std::error_code Reservation::map_anon_chunk(std::size_t index) {
    void* p = ::mmap(nullptr, kChunkSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return last_errno();
    return install(index, p);
}

std::error_code populate_write(std::byte* at, std::size_t len) {
    if (::madvise(at, len, MADV_POPULATE_WRITE) == 0) return {};
    if (errno != EINVAL) return last_errno();
    // Kernels before 5.14 lack MADV_POPULATE_WRITE: touch each page instead
    // (callers only get here with memory they know is backed).
    for (std::size_t off = 0; off < len; off += kPageSize) {
        auto* byte = reinterpret_cast<volatile unsigned char*>(at + off);
        *byte = *byte;
    }
    return {};
}

}  // namespace uhmm::devmem
