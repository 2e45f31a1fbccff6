// What /proc/self tells about the mappings under a range: whether the runtime
// may manage them, and which pages are present.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

namespace uhmm::space {

// Whether [start, end) is wholly private anonymous memory that no
// userfaultfd owns yet, from /proc/self/smaps. Errors, with `*why` one line:
//   EFAULT  part of it is not mapped
//   ENOENT  a shared mapping (hmm_range_fault refuses shared anonymous memory so)
//   EINVAL  file-backed, hugetlb, or a special mapping ([vdso], [vvar], ...)
//   EBUSY   already registered with a userfaultfd
std::error_code check_manageable(std::uintptr_t start, std::uintptr_t end, std::string* why);

// /proc/self/pagemap: bit 63 = present, bit 62 = swapped.
inline constexpr std::uint64_t kPagemapPresent = 1ull << 63;
inline constexpr std::uint64_t kPagemapSwapped = 1ull << 62;

// Read the pagemap entries of `pages` pages from `addr` into out[0..pages).
std::error_code read_pagemap(int pagemap_fd, std::uintptr_t addr, std::size_t pages, std::uint64_t* out) noexcept;

// The pages of [start, end) that a huge page maps (a THP's PMD, or
// hugetlb), as runs [first, last) appended to `out`, from PAGEMAP_SCAN.
// ENOTTY / EINVAL: the kernel has no PAGEMAP_SCAN (before 6.7).
struct PageRun {
    std::uintptr_t start, end;
};
std::error_code read_huge_runs(int pagemap_fd, std::uintptr_t start, std::uintptr_t end, std::vector<PageRun>& out);

}  // namespace uhmm::space
