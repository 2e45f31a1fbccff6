// What the process's mappings (VMAs) are over an interval: holes, PROT_NONE,
// read-only and special mappings, the things a page table walk cannot say.
// range_fault asks it on every call, so it is made cheap twice over:
//
// - It asks the kernel one mapping at a time with PROCMAP_QUERY (a lookup in
//   the kernel's maple tree under the VMA's own lock) instead of reading the
//   text of /proc/self/maps, whose cost grows with every mapping before the
//   interval. Kernels before 6.11 get the text.
// - Intervals inside managed memory can be served from a cache, stamped with
//   a generation that every known change bumps: the runtime's userfaultfd
//   events (munmap, mremap), manage/unmanage, and Runtime::protect(). mprotect
//   sends no userfaultfd event, so the cache is used only once the caller
//   says every mprotect is reported (the preload library hooks it); until
//   then each call asks the kernel, and a plain mprotect is always seen.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <vector>

#include <uhmm/fd.hpp>

namespace uhmm::space {

struct Vma {
    std::uintptr_t start = 0, end = 0;
    bool read = false, write = false, shared = false;
    bool special = false;              // [vvar], [vdso], [vsyscall]: no pages behind it to mirror
    std::size_t page_size = 4096;      // hugetlb mappings: their huge page size
};

class MappingView {
public:
    MappingView();   // opens /proc/self/maps; without it every lookup is an error
    MappingView(const MappingView&) = delete;
    MappingView& operator=(const MappingView&) = delete;

    // The mappings that overlap [start, end), in address order; what lies
    // between them is unmapped. `cache_extent`, when given, contains
    // [start, end) and every change to its mappings is reported through
    // changed() (the caller's promise: a managed range, with mprotect
    // hooked): a cached answer may serve, and a miss asks for the whole
    // extent so that the next lookups anywhere in it hit.
    struct Extent {
        std::uintptr_t start, end;
    };
    std::error_code lookup(std::uintptr_t start, std::uintptr_t end, std::vector<Vma>& out,
                           const Extent* cache_extent = nullptr);

    // Some mapping or protection changed: what is cached is stale. Lock-free
    // and allocation-free, for the fault thread.
    void changed() noexcept { generation_.fetch_add(1, std::memory_order_acq_rel); }

    struct Counters {
        std::uint64_t lookups = 0, cache_hits = 0, kernel_queries = 0;
    };
    Counters counters() const noexcept;

private:
    std::error_code ask_kernel(std::uintptr_t start, std::uintptr_t end, std::vector<Vma>& out);
    std::error_code ask_procmap_query(std::uintptr_t start, std::uintptr_t end, std::vector<Vma>& out);
    std::error_code ask_maps_text(std::uintptr_t start, std::uintptr_t end, std::vector<Vma>& out);

    struct Entry {
        std::uint64_t generation = 0;   // 0: empty (generations start at 1)
        std::uintptr_t start = 0, end = 0;
        std::vector<Vma> vmas;
    };
    static constexpr std::size_t kEntries = 8;   // intervals remembered, replaced round robin

    Fd maps_;
    std::atomic<bool> procmap_query_{true};   // false once the kernel said it has no PROCMAP_QUERY
    std::atomic<std::uint64_t> generation_{1};
    mutable std::mutex lock_;   // the cache below
    std::array<Entry, kEntries> cache_;
    std::size_t next_victim_ = 0;
    std::atomic<std::uint64_t> lookups_{0}, hits_{0}, queries_{0};
};

}  // namespace uhmm::space
