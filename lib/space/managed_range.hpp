// One managed range and its page table: a state and a device page per 4 KiB
// page, and a lock per 2 MiB block.
//
// A range lives in one anonymous mapping of its own (header, block locks,
// page entries), never on the heap: the fault thread creates ranges when an
// mremap moves managed pages somewhere new, and it must not call malloc (a
// thread in fork() holds malloc's locks while it waits for that thread).
// Fresh anonymous memory is zero, and all-zero entries mean "never touched",
// so a new table costs no initialisation pass.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include <boost/intrusive/set_hook.hpp>

#include <uhmm/arena_view.hpp>
#include <uhmm/devmem.hpp>
#include <uhmm/page_state.hpp>

namespace uhmm::space {

using devmem::PageIndex;
inline constexpr std::size_t kPage = devmem::kPageSize;
inline constexpr std::size_t kBlockPages = devmem::kChunkSize / kPage;   // one lock per 2 MiB

// Per-page flags.
enum PageFlag : std::uint8_t {
    kDiscarded = 1u << 0,   // MIGRATING page dropped by the application (DONTNEED, munmap)
    kHadData = 1u << 1,     // MIGRATING page that was present when collected (copied, then zapped)
    kUnmapped = 1u << 2,    // munmap left a hole here: not the application's memory any more
    kZapped = 1u << 3,      // MIGRATING page copied, left to the MADV_DONTNEED fallback zap
    kRefilled = 1u << 4,    // MIGRATING page that vanished under its copy and was zero-filled
    kWatched = 1u << 5,     // HOST page write-protected by watch_writes(): its first write is noted
    kWritten = 1u << 6,     // HOST page written since watched (take_writes() clears it)
    kReplica = 1u << 7,     // HOST page with a read-only device replica in `device` (read-mostly)
    // HOST page whose replica is still being copied (not to be read yet).
    // It shares its bit with kZapped, which only MIGRATING pages carry.
    kReplicaFilling = 1u << 3,
};

// Per-page advice (Runtime::advise), the bits of uhmm::advice_bits.
enum PageAdvice : std::uint8_t {
    kAdviseReadMostly = 1u << 0,
    kAdvisePreferHost = 1u << 1,
    kAdvisePreferDevice = 1u << 2,
    kAdviseAccessedBy = 1u << 3,
};

// 8 bytes per page. `device` is meaningful in MIGRATING and DEVICE, and in
// HOST with kReplica (the replica's page); `owner` in DEVICE only: the
// runtime's small id of the device that asked for the migration (0: none,
// at most kMaxOwners), for range_fault's dev_private_owner. `advice`: the
// page's PageAdvice bits, which stay with the page whatever its state.
struct PageEntry {
    PageIndex device;
    PageState state;
    std::uint8_t flags;
    std::uint16_t owner : 10;
    std::uint16_t advice : 6;
};
inline constexpr std::size_t kMaxOwners = 1023;
static_assert(sizeof(PageEntry) == 8);

class ManagedRange : public boost::intrusive::set_base_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>> {
public:
    // A range over [start, start + pages * kPage) with every page NONE;
    // nullptr when the table cannot be mapped (ENOMEM). The tree's reference
    // is the initial one.
    static ManagedRange* create(std::uintptr_t start, std::size_t pages, bool owned) noexcept;

    std::uintptr_t start() const noexcept { return start_; }
    std::uintptr_t end() const noexcept { return start_ + pages_ * kPage; }
    std::size_t pages() const noexcept { return pages_; }
    std::size_t bytes() const noexcept { return pages_ * kPage; }
    bool owned() const noexcept { return owned_; }
    bool contains(std::uintptr_t addr) const noexcept { return addr >= start_ && addr < end(); }
    std::size_t index_of(std::uintptr_t addr) const noexcept { return (addr - start_) / kPage; }
    std::uintptr_t address_of(std::size_t page) const noexcept { return start_ + page * kPage; }

    PageEntry& entry(std::size_t page) noexcept { return entries_[page]; }
    const PageEntry& entry(std::size_t page) const noexcept { return entries_[page]; }
    // The lock of the 2 MiB block (of the range) that holds `page`.
    std::mutex& lock_for(std::size_t page) const noexcept { return locks_[page / kBlockPages]; }
    std::size_t block_end(std::size_t page) const noexcept;   // first page of the next block (or pages())

    // References: the tree holds one while the range is managed; lookups take
    // one for as long as they use the range. The last put() unmaps the table.
    void get() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
    void put() noexcept;
    bool dead() const noexcept { return dead_.load(std::memory_order_acquire); }
    void mark_dead() noexcept { dead_.store(true, std::memory_order_release); }

    // Bytes of metadata this range costs (header, locks, entries).
    std::size_t metadata_bytes() const noexcept { return table_bytes_; }

    // The fault window, as the kernel's readahead: doubles while faults walk
    // the range in order (up or down: sort walks its buffers downwards),
    // `min_pages` on a random touch. Up to kStreams walks are followed at
    // once (a merge reads two runs and writes a third): a fault that
    // continues none of them starts one in place of the oldest. Returns the
    // window in pages (a power of two ≤ max_pages) for a fault at `page`.
    std::size_t fault_window(std::size_t page, std::size_t max_pages, std::size_t min_pages = 1) noexcept;
    static constexpr std::size_t kStreams = 4;

    ManagedRange(const ManagedRange&) = delete;
    ManagedRange& operator=(const ManagedRange&) = delete;

private:
    ManagedRange(std::uintptr_t start, std::size_t pages, bool owned, std::size_t table_bytes,
                 std::mutex* locks, PageEntry* entries) noexcept;
    ~ManagedRange() = default;

    std::uintptr_t start_;
    std::size_t pages_;
    bool owned_;
    std::size_t table_bytes_;
    std::mutex* locks_;
    PageEntry* entries_;
    std::atomic<std::uint32_t> refs_{1};
    std::atomic<bool> dead_{false};
    // The walks followed: where each expects its next fault going up, and
    // going down, and its window.
    struct Stream {
        std::atomic<std::size_t> next_up{~std::size_t{0}};
        std::atomic<std::size_t> next_down{~std::size_t{0}};
        std::atomic<std::size_t> window{1};
    };
    Stream streams_[kStreams];
    std::atomic<std::size_t> oldest_stream_{0};   // replaced by the next new walk
};

// Ordering for the tree: by start address.
struct RangeStart {
    using type = std::uintptr_t;
    type operator()(const ManagedRange& r) const noexcept { return r.start(); }
};

}  // namespace uhmm::space
