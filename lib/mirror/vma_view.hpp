// The process's mappings over an interval, from /proc/self/maps: what
// range_fault needs to know that the page table cannot say (holes, PROT_NONE,
// read-only mappings). Read on each call: mprotect sends no userfaultfd
// event, so a cached copy would need the preload hooks to stay true.
#pragma once

#include <cstdint>
#include <system_error>
#include <vector>

namespace uhmm::mirror::detail {

struct Vma {
    std::uintptr_t start = 0, end = 0;
    bool read = false, write = false, shared = false;
    bool special = false;   // [vvar], [vsyscall]...: no struct page behind it
};

// The mappings that overlap [start, end), in address order.
std::error_code read_vmas(std::uintptr_t start, std::uintptr_t end, std::vector<Vma>& out);

}  // namespace uhmm::mirror::detail
