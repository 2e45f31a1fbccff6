// SoftDevice: the reference device (see include/uhmm/soft_device.hpp).
#include <uhmm/soft_device.hpp>

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

namespace uhmm::mirror {

namespace {

constexpr std::size_t kPage = 4096;

std::error_code errc(std::errc e) { return std::make_error_code(e); }

// make_exclusive()'s mark on a table entry (dmirror's DPT_XA_TAG_ATOMIC). A
// bit of this device's table only, never of a range_fault word: those use
// bits 63..60 (flags), 53..48 (the mapping order) and 47..0 (the location).
constexpr std::uint64_t kAtomic = 1ull << 56;
static_assert((kAtomic & (pfn::flags_mask | pfn::order_mask | pfn::location_mask)) == 0);

// Copy one page between this process's memory at `remote` and a buffer,
// through the kernel: an unmapped page is EFAULT, not a crash; a device
// page takes the CPU's path home.
std::error_code host_copy(std::uintptr_t remote, void* local, bool to_remote) {
    iovec l{local, kPage}, r{reinterpret_cast<void*>(remote), kPage};
    const ssize_t n = to_remote ? ::process_vm_writev(::getpid(), &l, 1, &r, 1, 0)
                                : ::process_vm_readv(::getpid(), &l, 1, &r, 1, 0);
    if (n == static_cast<ssize_t>(kPage)) return {};
    return n < 0 ? std::error_code(errno, std::generic_category()) : errc(std::errc::bad_address);
}

}  // namespace

SoftDevice::SoftDevice(Runtime& rt, std::uintptr_t start, std::size_t pages)
    : rt_(rt), base_(start), pages_(pages), table_(pages, 0) {}

Result<std::unique_ptr<SoftDevice>> SoftDevice::create(Runtime& rt, void* addr, std::size_t len) {
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    if (!len || start % kPage || len % kPage || start + len < start) return errc(std::errc::invalid_argument);
    std::unique_ptr<SoftDevice> d(new SoftDevice(rt, start, len / kPage));
    if (auto ec = rt.notifiers().insert(*d, start, len)) return ec;
    return d;
}

SoftDevice::~SoftDevice() {
    rt_.notifiers().remove(*this);
    std::lock_guard lock(lock_);
    for (std::size_t i = 0; i < pages_; ++i) drop_locked(i);
}

std::error_code SoftDevice::check(const void* addr, std::size_t len) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    if (!len || a % kPage || len % kPage || a < base_ || a + len > base_ + pages_ * kPage || a + len < a)
        return errc(std::errc::invalid_argument);
    return {};
}

void SoftDevice::drop_locked(std::size_t page) noexcept {
    const std::uint64_t e = table_[page];
    if (e & pfn::device) (void)rt_.device_page_put(e & pfn::location_mask);
    table_[page] = 0;
}

bool SoftDevice::invalidate(const Invalidation& inv, std::uint64_t) noexcept {
    // Its own migrations to the device: it maps the new pages itself.
    if (inv.event == Event::migrate && inv.owner == this) return true;
    std::unique_lock lock(lock_, std::defer_lock);
    if (inv.blockable) lock.lock();
    else if (!lock.try_lock()) return false;
    const std::uintptr_t a = std::max(inv.start, base_), b = std::min(inv.end, base_ + pages_ * kPage);
    for (std::uintptr_t at = a; at < b; at += kPage) drop_locked((at - base_) / kPage);
    invalidations_.fetch_add(1, std::memory_order_relaxed);
    return true;
}

std::error_code SoftDevice::populate(std::uintptr_t start, std::uintptr_t end) noexcept {
    const std::uintptr_t a = std::max(start, base_), b = std::min(end, base_ + pages_ * kPage);
    if (a >= b) return {};
    std::size_t passes = 0;
    try {
        return fault_in((a - base_) / kPage, (b - base_) / kPage, 0, passes);
    } catch (const std::bad_alloc&) {
        return errc(std::errc::not_enough_memory);
    }
}

std::error_code SoftDevice::fault_in(std::size_t first, std::size_t last, std::uint64_t request, std::size_t& faults) {
    std::vector<std::uint64_t> pfns(last - first);
    // Racing invalidations are retried for a second, as the kernel's
    // HMM_RANGE_DEFAULT_TIMEOUT, then EBUSY.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1000);
    while (std::chrono::steady_clock::now() < deadline) {
        Range r;
        r.notifier = this;
        r.notifier_seq = read_begin();
        r.start = base_ + first * kPage;
        r.end = base_ + last * kPage;
        r.pfns = pfns.data();
        r.default_flags = request;
        r.dev_private_owner = this;
        ++faults;
        if (auto ec = range_fault(rt_, r)) {
            if (ec == std::errc::device_or_resource_busy) continue;
            return ec;
        }
        std::lock_guard lock(lock_);
        if (read_retry(r.notifier_seq)) continue;
        for (std::size_t i = first; i < last; ++i) {
            const std::uint64_t old = table_[i];
            drop_locked(i);
            std::uint64_t e = pfns[i - first];
            // A device page stays ours while mapped: hold a reference.
            if ((e & pfn::device) &&
                rt_.device_page_hold(reinterpret_cast<void*>(base_ + i * kPage), e & pfn::location_mask))
                e = 0;   // moved since the snapshot: no entry, the next access faults again
            // An atomic entry that no invalidation dropped still has the CPU
            // locked out: refreshing the same page keeps it atomic.
            if (e && (old & kAtomic) && (old & ~kAtomic) == e) e |= kAtomic;
            table_[i] = e;
        }
        return {};
    }
    return errc(std::errc::device_or_resource_busy);
}

template <class CopyPage>
Result<DeviceResult> SoftDevice::access(const void* addr, std::size_t len, bool write, CopyPage copy_page) {
    // dmirror's read / write: use the entries when every page has one good
    // enough, else fault them in (one pass = one fault) and look again.
    if (auto ec = check(addr, len)) return ec;
    const std::size_t first = (reinterpret_cast<std::uintptr_t>(addr) - base_) / kPage, last = first + len / kPage;
    const std::uint64_t need = pfn::valid | (write ? pfn::write : 0);
    DeviceResult res;
    for (int round = 0; round < 16; ++round) {
        {
            std::lock_guard lock(lock_);
            const bool all = std::all_of(table_.begin() + static_cast<std::ptrdiff_t>(first),
                                         table_.begin() + static_cast<std::ptrdiff_t>(last),
                                         [&](std::uint64_t e) { return (e & need) == need; });
            if (all) {
                bool stale = false;
                for (std::size_t i = first; i < last && !stale; ++i) {
                    const auto ec = copy_page(table_[i], base_ + i * kPage, (i - first) * kPage);
                    // A CPU fault took the device page home and its
                    // invalidation is on the way: drop the entry, fault again.
                    if (ec == std::error_condition(ESTALE, std::generic_category())) {
                        drop_locked(i);
                        stale = true;
                    } else if (ec) {
                        return ec;
                    }
                }
                if (!stale) {
                    res.cpages = last - first;
                    return res;
                }
                continue;
            }
        }
        if (auto ec = fault_in(first, last, pfn::req_fault | (write ? pfn::req_write : 0), res.faults)) return ec;
    }
    return errc(std::errc::device_or_resource_busy);
}

Result<DeviceResult> SoftDevice::read(const void* addr, std::size_t len, void* out) {
    auto* dst = static_cast<std::byte*>(out);
    return access(addr, len, false, [&](std::uint64_t e, std::uintptr_t at, std::size_t off) {
        return (e & pfn::device)
                   ? rt_.device_page_read(reinterpret_cast<void*>(at), e & pfn::location_mask, 0, dst + off, kPage)
                   : host_copy(at, dst + off, false);
    });
}

Result<DeviceResult> SoftDevice::write(void* addr, std::size_t len, const void* in) {
    auto* src = const_cast<std::byte*>(static_cast<const std::byte*>(in));
    return access(addr, len, true, [&](std::uint64_t e, std::uintptr_t at, std::size_t off) {
        return (e & pfn::device)
                   ? rt_.device_page_write(reinterpret_cast<void*>(at), e & pfn::location_mask, 0, src + off, kPage)
                   : host_copy(at, src + off, true);
    });
}

Result<DeviceResult> SoftDevice::migrate_to_device(void* addr, std::size_t len) {
    if (auto ec = check(addr, len)) return ec;
    if (fail_alloc_.exchange(false)) return errc(std::errc::not_enough_memory);
    auto r = rt_.migrate(addr, len, Target::device, this);
    if (!r && r.error() == std::errc::bad_address) {
        // Not managed yet: a kernel device may migrate any private anonymous
        // memory, so this one hands the range to the runtime first. Its
        // refusals are the kernel's (shared memory: ENOENT).
        if (auto ec = rt_.manage(addr, len)) return ec;
        r = rt_.migrate(addr, len, Target::device, this);
    }
    if (!r) return r.error();
    // Map the new device pages at once, with the permissions the source
    // pages had (nouveau's "map after migration"): no second fault. A
    // snapshot, no fault requested: another device's pages stay where they are.
    const std::size_t first = (reinterpret_cast<std::uintptr_t>(addr) - base_) / kPage;
    std::size_t unused = 0;
    if (auto ec = fault_in(first, first + len / kPage, 0, unused)) return ec;
    DeviceResult res;
    res.cpages = r->migrated;
    if (r->failed && !r->migrated) return r->error ? r->error : errc(std::errc::not_enough_memory);
    return res;
}

Result<DeviceResult> SoftDevice::migrate_to_host(void* addr, std::size_t len) {
    if (auto ec = check(addr, len)) return ec;
    // No owner: its own callback drops the entries of the pages that move.
    auto r = rt_.migrate(addr, len, Target::host);
    if (!r) return r.error();
    DeviceResult res;
    res.cpages = r->migrated;
    return res;
}

Result<DeviceResult> SoftDevice::snapshot(const void* addr, std::size_t len, std::uint8_t* out) {
    if (auto ec = check(addr, len)) return ec;
    const std::size_t n = len / kPage;
    std::vector<std::uint64_t> pfns(n);
    Range r;
    r.start = reinterpret_cast<std::uintptr_t>(addr);
    r.end = r.start + len;
    r.pfns = pfns.data();
    r.dev_private_owner = this;
    if (auto ec = range_fault(rt_, r)) return ec;
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint64_t e = pfns[i];
        if (e & pfn::error) out[i] = snap::error;
        else if (!(e & pfn::valid)) out[i] = snap::none;
        else out[i] = static_cast<std::uint8_t>(((e & pfn::device) ? snap::device_local : 0) |
                                                ((e & pfn::write) ? snap::write : snap::read) |
                                                (pfn::map_order(e) == 9 ? snap::pmd : 0) |
                                                (pfn::map_order(e) == 18 ? snap::pud : 0));
    }
    DeviceResult res;
    res.cpages = n;
    return res;
}

Result<DeviceResult> SoftDevice::release() {
    std::vector<std::size_t> mine;
    {
        std::lock_guard lock(lock_);
        for (std::size_t i = 0; i < pages_; ++i)
            if (table_[i] & pfn::device) mine.push_back(i);
    }
    DeviceResult res;
    for (std::size_t i = 0; i < mine.size();) {
        std::size_t j = i + 1;
        while (j < mine.size() && mine[j] == mine[j - 1] + 1) ++j;
        auto r = rt_.migrate(reinterpret_cast<void*>(base_ + mine[i] * kPage), (j - i) * kPage, Target::host);
        if (!r) return r.error();
        res.cpages += r->migrated;
        i = j;
    }
    return res;
}

Result<DeviceResult> SoftDevice::make_exclusive(void* addr, std::size_t len) {
    // To the device first, mapped at once: the CPU loses the pages, so its
    // next access faults and the runtime tells us (see the header).
    auto m = migrate_to_device(addr, len);
    if (!m) return m.error();
    // Mark what is ours and writable now: pages that were already here count
    // too; one dropped since the migration has no entry and is not counted.
    const std::size_t first = (reinterpret_cast<std::uintptr_t>(addr) - base_) / kPage, last = first + len / kPage;
    DeviceResult res;
    std::lock_guard lock(lock_);
    for (std::size_t i = first; i < last; ++i) {
        if ((table_[i] & (pfn::device | pfn::write)) != (pfn::device | pfn::write)) continue;
        table_[i] |= kAtomic;
        ++res.cpages;
    }
    return res;
}

bool SoftDevice::check_exclusive(const void* addr, std::size_t len) const {
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    const std::uintptr_t end = base_ + pages_ * kPage;
    if (a >= end || a + len <= base_) return true;
    const std::size_t first = (std::max(a, base_) - base_) / kPage;
    const std::size_t last = (std::min(a + len, end) - base_ + kPage - 1) / kPage;
    std::lock_guard lock(lock_);
    return std::none_of(table_.begin() + static_cast<std::ptrdiff_t>(first),
                        table_.begin() + static_cast<std::ptrdiff_t>(last),
                        [](std::uint64_t e) { return (e & kAtomic) != 0; });
}

void SoftDevice::fail_next_allocation() noexcept { fail_alloc_.store(true); }

std::uint64_t SoftDevice::invalidations() const noexcept { return invalidations_.load(std::memory_order_relaxed); }

std::size_t SoftDevice::entries() const {
    std::lock_guard lock(lock_);
    return static_cast<std::size_t>(std::count_if(table_.begin(), table_.end(), [](std::uint64_t e) { return e != 0; }));
}

}  // namespace uhmm::mirror
