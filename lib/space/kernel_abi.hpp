// Two /proc ioctls newer than Debian 12's headers, spelled out as the
// kernel's include/uapi/linux/fs.h has them:
// - PROCMAP_QUERY on /proc/PID/maps (Linux 6.11): one mapping by address,
//   with its permissions and page size, without the text of every mapping
//   before it.
// - PAGEMAP_SCAN on /proc/PID/pagemap (Linux 6.7): runs of pages by
//   category; range_fault asks it which pages a huge page maps.
#pragma once

#include <sys/ioctl.h>

#include <cstdint>

namespace uhmm::space::kernel {

struct procmap_query {
    std::uint64_t size;            // in: sizeof(procmap_query)
    std::uint64_t query_flags;     // in
    std::uint64_t query_addr;      // in
    std::uint64_t vma_start;       // out
    std::uint64_t vma_end;         // out
    std::uint64_t vma_flags;       // out: kVma* below
    std::uint64_t vma_page_size;   // out: 4096, or the hugetlb page size
    std::uint64_t vma_offset;      // out
    std::uint64_t inode;           // out
    std::uint32_t dev_major;       // out
    std::uint32_t dev_minor;       // out
    std::uint32_t vma_name_size;   // in/out: buffer size / name length with its NUL
    std::uint32_t build_id_size;   // in/out
    std::uint64_t vma_name_addr;   // in
    std::uint64_t build_id_addr;   // in
};

inline constexpr unsigned long kProcmapQuery = _IOWR('f', 17, procmap_query);

inline constexpr std::uint64_t kVmaReadable = 0x01;
inline constexpr std::uint64_t kVmaWritable = 0x02;
inline constexpr std::uint64_t kVmaExecutable = 0x04;
inline constexpr std::uint64_t kVmaShared = 0x08;
inline constexpr std::uint64_t kCoveringOrNextVma = 0x10;   // query_flags: the mapping at or after the address

struct page_region {
    std::uint64_t start, end;      // [start, end)
    std::uint64_t categories;      // kPageIs* bits
};

struct pm_scan_arg {
    std::uint64_t size;                  // in: sizeof(pm_scan_arg)
    std::uint64_t flags;                 // in
    std::uint64_t start, end;            // in: the interval
    std::uint64_t walk_end;              // out: where the walk stopped
    std::uint64_t vec, vec_len;          // in: page_region array
    std::uint64_t max_pages;             // in: 0 = no limit
    std::uint64_t category_inverted;     // in
    std::uint64_t category_mask;         // in: all of these
    std::uint64_t category_anyof_mask;   // in
    std::uint64_t return_mask;           // in: categories reported
};

inline constexpr unsigned long kPagemapScan = _IOWR('f', 16, pm_scan_arg);
inline constexpr std::uint64_t kPageIsPresent = 1u << 3;
inline constexpr std::uint64_t kPageIsHuge = 1u << 6;   // mapped by a PMD (THP) or a hugetlb entry

}  // namespace uhmm::space::kernel
