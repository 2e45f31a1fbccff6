// HugetlbPool: the kernel's pool of 2 MiB huge pages, through sysfs.
//
// The hugepage backend needs free pages before it maps (a hugetlb page that
// is not there means ENOMEM at mmap, or SIGBUS on touch), and may, as root and
// only when asked (arena_reserve=on), raise nr_hugepages for itself and lower
// it again by as much when the arena goes. Reads and writes are serialised
// within the process; other processes can still race (the kernel may grant
// fewer pages than asked for: the caller re-reads and says so).
#pragma once

#include <string>

#include <uhmm/result.hpp>

namespace uhmm::devmem {

struct PoolCounts {
    long total = 0;      // nr_hugepages
    long free = 0;       // free_hugepages
    long reserved = 0;   // resv_hugepages: free but promised to a mapping
    long available() const noexcept { return free - reserved; }
};

class HugetlbPool {
public:
    explicit HugetlbPool(std::string dir) : dir_(std::move(dir)) {}

    const std::string& dir() const noexcept { return dir_; }
    Result<PoolCounts> read() const;
    // Ask for `n` more pages; returns how many the kernel added (maybe fewer).
    // `*why` gets the failing file and error.
    Result<long> add(long n, std::string* why) const;
    // Give back `n` pages this process added (never below what is in use).
    std::error_code remove(long n) const;

private:
    std::string dir_;
};

}  // namespace uhmm::devmem
