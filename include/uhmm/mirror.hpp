// uhmm::mirror — keeping a device's view of the address space in step with
// the process: interval notifiers with sequence numbers, as the kernel's
// mmu_interval_notifier.
//
// A device that mirrors [start, end) derives a Notifier and inserts it in the
// runtime's registry. The runtime calls invalidate() for every change that
// touches the interval: munmap or mremap away (unmap), madvise DONTNEED/FREE/
// REMOVE (clear), mprotect (protection), a migration (migrate, with the
// migrating device as owner so it can ignore its own), the runtime's end
// (release) and fork (fork). The device takes its own lock there and drops
// its entries for the range.
//
// To program its page table without racing an invalidation, a device does
// what a kernel driver does:
//
//     again:
//         seq = notifier.read_begin();     // waits out a running invalidation
//         ... look up / fault the pages (range_fault), without the device lock ...
//         lock(device);
//         if (notifier.read_retry(seq)) { unlock(device); goto again; }
//         ... program the device's entries ...
//         unlock(device);
//
// The registry changes the notifier's sequence before each callback starts,
// so an invalidation that begins after read_begin() is always seen by
// read_retry(), and the callback (which takes the device lock) runs after any
// entries programmed under that lock: either way no stale entry survives.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <string_view>
#include <system_error>

#include <boost/intrusive/set.hpp>

namespace uhmm::mirror {

enum class Event : std::uint8_t {
    unmap,        // munmap, mremap away from here, a shrink
    clear,        // madvise DONTNEED / FREE / REMOVE: the pages read zero next
    protection,   // mprotect (reported by the preload hooks)
    migrate,      // the runtime moved pages between host and device (see owner)
    release,      // the runtime is going away: drop everything
    fork,         // fork(): pages became copy-on-write
};
std::string_view to_string(Event e) noexcept;

struct Invalidation {
    std::uintptr_t start = 0, end = 0;   // [start, end), page-aligned
    Event event = Event::unmap;
    // false: the caller cannot wait (a background policy). The callback may
    // then answer "would block" and the caller backs off and retries later.
    bool blockable = true;
    // migrate: who asked for the migration (nullptr: the CPU or the
    // application). A device passes itself and skips its own.
    const void* owner = nullptr;
};

class NotifierRegistry;

// One device's interest in an interval. Derive and implement invalidate().
class Notifier {
public:
    Notifier() = default;
    virtual ~Notifier() = default;   // remove it from its registry first
    Notifier(const Notifier&) = delete;
    Notifier& operator=(const Notifier&) = delete;

    // Called for each invalidation that overlaps [start(), end()), with no
    // runtime lock held: take the device's lock, drop the device's entries
    // of [inv.start, inv.end), return true. Return false ("would block")
    // only when !inv.blockable and the device lock is busy. `seq` is the
    // sequence number this invalidation gave the notifier. Must not throw,
    // insert or remove notifiers, or touch managed memory that may be on the
    // device (the thread may be one the fault path waits for).
    virtual bool invalidate(const Invalidation& inv, std::uint64_t seq) noexcept = 0;

    // Advice accessed_by (Runtime::advise): map the pages of [start, end)
    // where they are now, without faulting or moving any (range_fault with
    // no request; device pages of any owner are reported in place). Called
    // with no runtime lock held, from the thread that advised or migrated.
    // ENOTSUP (the default): this device cannot, and the advice is refused.
    virtual std::error_code populate(std::uintptr_t start, std::uintptr_t end) noexcept;

    // Wait until no invalidation of this notifier is running; return the
    // sequence number to pass to read_retry().
    std::uint64_t read_begin() const;
    // True when an invalidation began since read_begin() returned `seq`:
    // what was looked up may be stale, start again. Call it under the lock
    // the callback takes.
    bool read_retry(std::uint64_t seq) const noexcept { return seq_.load(std::memory_order_acquire) != seq; }

    std::uintptr_t start() const noexcept { return start_; }
    std::uintptr_t end() const noexcept { return end_; }
    bool inserted() const noexcept { return registry_ != nullptr; }

private:
    friend class NotifierRegistry;
    struct ByStart {
        bool operator()(const Notifier& a, const Notifier& b) const noexcept { return a.start_ < b.start_; }
    };
    void begin_invalidation(std::uint64_t seq);
    void end_invalidation();

    boost::intrusive::set_member_hook<> hook_;
    std::uintptr_t start_ = 0, end_ = 0;
    NotifierRegistry* registry_ = nullptr;
    std::atomic<std::uint64_t> seq_{0};    // odd while an invalidation runs
    mutable std::mutex mutex_;             // in_flight_ and the wait below
    mutable std::condition_variable idle_;
    unsigned in_flight_ = 0;

public:
    using Hook = boost::intrusive::member_hook<Notifier, boost::intrusive::set_member_hook<>, &Notifier::hook_>;
};

// The notifiers of one address space. Thread-safe; invalidations may run
// concurrently with each other, insert() and remove() wait for them.
class NotifierRegistry {
public:
    NotifierRegistry() = default;
    ~NotifierRegistry();   // removes what is left (their callbacks are never called again)
    NotifierRegistry(const NotifierRegistry&) = delete;
    NotifierRegistry& operator=(const NotifierRegistry&) = delete;

    // Watch [start, start+len): page-aligned, non-empty, not wrapping
    // (EINVAL); a notifier is in one registry at a time (EBUSY).
    std::error_code insert(Notifier& n, std::uintptr_t start, std::size_t len);
    // Stop watching. Returns after every callback of `n` in flight has
    // returned. Never from inside a callback. A notifier not inserted: no-op.
    void remove(Notifier& n);

    enum class Outcome : std::uint8_t { done, would_block };
    // Tell every notifier overlapping [inv.start, inv.end), in address order,
    // for a change already made (an unmap, an mprotect).
    // would_block: a callback refused a non-blockable invalidation; the ones
    // before it ran, the rest were not called (as the kernel does).
    Outcome invalidate(const Invalidation& inv);

    // An invalidation held open over the change it announces, as the
    // kernel's invalidate_range_start .. invalidate_range_end: the callbacks
    // run at start, and until the window ends the notifiers stay invalidating
    // (read_begin() waits, read_retry() fails), so a device cannot look up
    // and map a page the change is still moving. Ends when destroyed.
    class Window {
    public:
        Window() = default;
        ~Window() { end(); }
        Window(const Window&) = delete;
        Window& operator=(const Window&) = delete;
        void end() noexcept;

    private:
        friend class NotifierRegistry;
        const NotifierRegistry* registry_ = nullptr;
        std::shared_lock<std::shared_mutex> lock_;   // insert() and remove() wait for the end
        std::uintptr_t start_ = 0, end_ = 0;
        std::size_t begun_ = 0;                       // notifiers, in address order, still invalidating
    };
    // Start `window` (ending the one it held): would_block ends it at once,
    // as invalidate() would have left things. Callbacks must not start or
    // wait for windows; the window's holder must not call read_begin().
    Outcome start(const Invalidation& inv, Window& window);

    std::size_t size() const;
    // No notifier at all: lock-free, for callers that may not wait (the
    // fault thread skips posting then). An insert that this misses happens
    // after the caller's change, so the new notifier's first range_fault
    // sees that change anyway.
    bool empty() const noexcept { return count_.load(std::memory_order_seq_cst) == 0; }
    // Whether any notifier overlaps [start, end): lets callers skip work.
    bool watched(std::uintptr_t start, std::uintptr_t end) const;
    // Run fn(n) if `n` is inserted here, holding it there until fn returns
    // (remove() waits); false, fn not called, when it is not. `n` is only
    // compared, never followed, so a notifier destroyed since is safe to ask
    // about. fn must not insert or remove notifiers.
    bool with_inserted(const Notifier* n, const std::function<void(Notifier&)>& fn) const;

private:
    using Set = boost::intrusive::multiset<Notifier, Notifier::Hook, boost::intrusive::compare<Notifier::ByStart>>;
    template <class F> void for_each_overlapping(std::uintptr_t start, std::uintptr_t end, F&& f) const;

    mutable std::shared_mutex lock_;   // shared: invalidations; exclusive: insert/remove
    Set set_;
    std::uintptr_t max_len_ = 0;       // the longest interval inserted: bounds the overlap search
    std::atomic<std::size_t> count_{0};   // set_.size(), readable without the lock
    std::atomic<std::uint64_t> next_seq_{1};   // odd values, one per callback
};

// ---- range_fault: a snapshot of the CPU page table, faulting where asked ----------

// One 64-bit word per page, as the kernel's hmm_pfns. In: request flags
// (req_fault, req_write). Out: flags, and in the low 48 bits the page's
// location: the virtual page number (address / 4096) of a host page, or the
// arena page index of a device page (with `device`).
namespace pfn {
inline constexpr std::uint64_t valid = 1ull << 63;    // out: mapped, readable
inline constexpr std::uint64_t write = 1ull << 62;    // out: writable without a fault (not copy-on-write)
inline constexpr std::uint64_t error = 1ull << 61;    // out: not accessible (PROT_NONE, special mapping)
inline constexpr std::uint64_t device = 1ull << 60;   // out: a device page of dev_private_owner
inline constexpr std::uint64_t req_fault = valid;     // in: make it valid (fault it in)
inline constexpr std::uint64_t req_write = write;     // in: make it writable (with req_fault)
inline constexpr std::uint64_t location_mask = (1ull << 48) - 1;
// out: the size of the CPU mapping the page is part of, as log2 of pages:
// 9 for a 2 MiB huge page (a THP's PMD, or hugetlb), 18 for 1 GiB, 0 for a
// 4 KiB page (hmm_pfn_to_map_order). A device may map that much at once.
inline constexpr unsigned order_shift = 48;
inline constexpr std::uint64_t order_mask = 0x3Full << order_shift;
constexpr unsigned map_order(std::uint64_t word) noexcept { return static_cast<unsigned>((word & order_mask) >> order_shift); }
inline constexpr std::uint64_t flags_mask = valid | write | error | device;
}  // namespace pfn

struct Range {
    // The interval's notifier and the sequence read_begin() gave: when an
    // invalidation began since, range_fault() says EBUSY (start again).
    const Notifier* notifier = nullptr;
    std::uint64_t notifier_seq = 0;
    std::uintptr_t start = 0, end = 0;    // page-aligned
    std::uint64_t* pfns = nullptr;        // (end - start) / 4096 words: in requests, out results
    // Each page's request is (pfns[i] & pfn_flags_mask) | default_flags.
    std::uint64_t default_flags = 0;
    std::uint64_t pfn_flags_mask = 0;
    // Device pages migrated at this owner's request (migrate(..., owner))
    // are reported as `device` pages; other device pages count as absent
    // (and are brought home when a fault is requested).
    const void* dev_private_owner = nullptr;
};

}  // namespace uhmm::mirror

namespace uhmm {
class Runtime;
namespace mirror {
// Fill range.pfns from the CPU page table and the runtime's page states,
// faulting in (MADV_POPULATE_READ / _WRITE, which brings device pages home
// through the runtime) the pages whose request is not met. With no request
// bits set it is a snapshot and faults nothing. Errors: EINVAL (bad range),
// EFAULT (a requested page is in no mapping, or PROT_NONE / special), EPERM
// (write requested on a read-only mapping), EBUSY (an invalidation raced:
// read_begin() again and retry), ENOMEM.
std::error_code range_fault(Runtime& rt, Range& range);

// A device's side of range_map: its page table's map and unmap of one page.
class DeviceMapper {
public:
    virtual ~DeviceMapper() = default;
    // Map page i of the range from its range_fault word (pfn::device and an
    // arena page index, or a host page; pfn::write: read-write, else
    // read-only). An error makes range_map undo what it mapped.
    virtual std::error_code map_page(std::size_t i, std::uint64_t word) = 0;
    virtual void unmap_page(std::size_t i, std::uint64_t word) noexcept = 0;
};

// Fault the range as asked and map every valid page in the device, all in
// one call (hmm_range_dma_map): range_fault, then under `device_lock`
// read_retry and map_page for each valid page, taking a reference on each
// device page. A racing invalidation starts it over; a failed map_page
// unmaps what was mapped and returns the error. Needs range.notifier
// (EINVAL). Errors: range_fault's, EBUSY when invalidations kept racing it
// for a second (the kernel's HMM_RANGE_DEFAULT_TIMEOUT), map_page's.
std::error_code range_map(Runtime& rt, Range& range, DeviceMapper& mapper, std::mutex& device_lock);
// Undo range_map: unmap_page for each page it mapped, and the device page
// references it took dropped. Those belong to the range, not to the device's
// table: a notifier callback that drops an entry must not drop them. Host
// pages the device wrote through the kernel are already dirty.
void range_unmap(Runtime& rt, const Range& range, DeviceMapper& mapper, std::mutex& device_lock);
}  // namespace mirror
}  // namespace uhmm
