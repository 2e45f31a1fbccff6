// range_fault: snapshot, fault what is asked, snapshot again (hmm_range_fault
// in user space). The CPU page table comes from /proc/self/pagemap (present,
// exclusively mapped, write-protected by userfaultfd; PAGEMAP_SCAN says which
// pages a huge page maps), the mappings from the runtime's MappingView,
// device residency from the runtime's page table. Faulting
// is MADV_POPULATE_READ / _WRITE from the calling thread: a device page takes
// a userfaultfd fault and the runtime brings it home, a copy-on-write page
// is broken by the kernel, exactly as a CPU access would.
#include "mirror/range_fault.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <mutex>
#include <optional>
#include <vector>

#include "space/proc_maps.hpp"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace uhmm::mirror::detail {

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::uint64_t kExclusive = 1ull << 56;   // pagemap: page exclusively mapped
constexpr std::uint64_t kUffdWp = 1ull << 57;      // pagemap: write-protected by userfaultfd
constexpr int kAttempts = 4;

enum class Need : std::uint8_t { none, read, write };

std::error_code errc(std::errc e) { return std::make_error_code(e); }

unsigned log2_pages(std::size_t bytes) {
    unsigned order = 0;
    while ((kPage << order) < bytes) ++order;
    return order;
}

// The managed range that holds all of [start, end), if one does.
std::optional<space::MappingView::Extent> managed_extent(const space::AddressSpace* space, std::uintptr_t start,
                                                         std::uintptr_t end) {
    if (!space) return std::nullopt;
    auto r = space->find(start);
    if (!r || r->end() < end) return std::nullopt;
    return space::MappingView::Extent{r->start(), r->end()};
}

// The map order of each page (pfn::map_order), 0 unless a huge page maps it.
// Managed ranges hold no huge pages (MADV_NOHUGEPAGE, hugetlb refused), so
// only unmanaged memory is scanned. A kernel without PAGEMAP_SCAN reports
// hugetlb mappings (the view knows their page size) and no THPs.
void huge_orders(const PageSource& src, const Range& range, bool managed, const std::vector<space::Vma>& vmas,
                 std::vector<std::uint8_t>& order) {
    std::fill(order.begin(), order.end(), 0);
    if (managed) return;
    auto mark = [&](std::uintptr_t a, std::uintptr_t b, unsigned o) {
        a = std::max(a, range.start);
        b = std::min(b, range.end);
        for (std::uintptr_t p = a; p < b; p += kPage) order[(p - range.start) / kPage] = static_cast<std::uint8_t>(o);
    };
    std::vector<space::PageRun> runs;
    if (!space::read_huge_runs(src.pagemap_fd, range.start, range.end, runs)) {
        for (const auto& run : runs) {
            // A hugetlb mapping says its page size; a THP is a PMD.
            unsigned o = 9;
            for (const auto& v : vmas)
                if (v.start <= run.start && run.start < v.end && v.page_size > kPage) o = log2_pages(v.page_size);
            mark(run.start, run.end, o);
        }
        return;
    }
    for (const auto& v : vmas)
        if (v.page_size > kPage) mark(v.start, v.end, log2_pages(v.page_size));
}

}  // namespace

std::error_code range_fault(const PageSource& src, Range& range) {
    if (range.start % kPage || range.end % kPage || range.end <= range.start || !range.pfns)
        return errc(std::errc::invalid_argument);
    const std::size_t n = (range.end - range.start) / kPage;
    std::vector<std::uint64_t> req(n), pm(n);
    for (std::size_t i = 0; i < n; ++i)
        req[i] = ((range.pfns[i] & range.pfn_flags_mask) | range.default_flags) & (pfn::req_fault | pfn::req_write);
    std::vector<space::Vma> vmas;
    std::vector<Need> need(n);
    std::vector<std::uint8_t> order(n);
    std::optional<space::MappingView> own_view;   // only when the caller has none
    space::MappingView& view = src.view ? *src.view : own_view.emplace();
    const auto extent = managed_extent(src.space, range.start, range.end);
    const bool managed = extent.has_value();
    // The view's cache may serve only where every change is reported.
    const space::MappingView::Extent* cache_extent = managed && src.protection_reported ? &*extent : nullptr;

    auto in_place = [&](std::uintptr_t addr) {
        if (!src.in_place) return false;
        for (const auto& [a, b] : *src.in_place)
            if (a <= addr && addr < b) return true;
        return false;
    };
    // Read-mostly pages a device reads get replicas, once per call: when one
    // cannot be made, the host page serves.
    std::vector<std::uint8_t> wants_replica(n);
    bool replicated = false;

    for (int attempt = 0;; ++attempt) {
        bool any_replica = false;
        if (auto ec = view.lookup(range.start, range.end, vmas, cache_extent)) return ec;
        if (auto ec = space::read_pagemap(src.pagemap_fd, range.start, n, pm.data())) return ec;
        huge_orders(src, range, managed, vmas, order);
        bool any = false;
        std::size_t v = 0;
        space::RangeRef managed;
        std::unique_lock<std::mutex> block;
        std::size_t block_of = ~std::size_t{0};
        for (std::size_t i = 0; i < n; ++i) {
            const std::uintptr_t addr = range.start + i * kPage;
            const bool want = req[i] & pfn::req_fault, want_write = want && (req[i] & pfn::req_write);
            need[i] = Need::none;
            std::uint64_t out = 0;
            while (v < vmas.size() && vmas[v].end <= addr) ++v;
            const space::Vma* vma = v < vmas.size() && vmas[v].start <= addr ? &vmas[v] : nullptr;
            if (!vma) {
                if (want) return errc(std::errc::bad_address);
                range.pfns[i] = 0;
                continue;
            }
            if (!vma->read || vma->special) {
                if (want) return errc(std::errc::bad_address);
                range.pfns[i] = pfn::error;
                continue;
            }
            if (want_write && !vma->write) return errc(std::errc::operation_not_permitted);

            // A device page: this owner's is reported where it is; another's
            // is absent to this device (faulting brings it home).
            bool on_device = false;
            if (src.space) {
                if (!managed || !managed->contains(addr)) {
                    if (block) block.unlock();
                    block = {};
                    block_of = ~std::size_t{0};
                    managed = src.space->find(addr);
                }
                if (managed) {
                    const std::size_t page = managed->index_of(addr);
                    if (page / space::kBlockPages != block_of) {
                        block = std::unique_lock(managed->lock_for(page));
                        block_of = page / space::kBlockPages;
                    }
                    const auto& e = managed->entry(page);
                    if (e.state == PageState::device) {
                        on_device = true;
                        // In place: the page still carries the advice (the
                        // intervals outlive memory unmapped and mapped again).
                        if ((src.owner && e.owner == src.owner) ||
                            ((e.advice & space::kAdviseAccessedBy) && in_place(addr))) {
                            out = pfn::valid | pfn::device | (vma->write ? pfn::write : 0) |
                                  (e.device & pfn::location_mask);
                            range.pfns[i] = out;
                            continue;
                        }
                    } else if (src.device_reader && e.state == PageState::host && !want_write) {
                        // A replica, read-only: a write request faults it away.
                        if ((e.flags & space::kReplica) && !(e.flags & space::kReplicaFilling)) {
                            range.pfns[i] = pfn::valid | pfn::device | (e.device & pfn::location_mask);
                            continue;
                        }
                        wants_replica[i] = want && !replicated && (e.advice & space::kAdviseReadMostly) &&
                                           !(e.flags & space::kReplica);
                        any_replica |= wants_replica[i];
                    }
                }
            }
            const bool present = !on_device && (pm[i] & space::kPagemapPresent);
            if (present) {
                const bool writable = vma->write && (vma->shared || ((pm[i] & kExclusive) && !(pm[i] & kUffdWp)));
                out = pfn::valid | (writable ? pfn::write : 0) | ((addr / kPage) & pfn::location_mask) |
                      (std::uint64_t{order[i]} << pfn::order_shift);
                if (want_write && !writable) need[i] = Need::write;
            } else if (want) {
                need[i] = want_write ? Need::write : Need::read;
            }
            range.pfns[i] = out;
            any |= need[i] != Need::none;
        }
        if (block) block.unlock();
        if (any_replica && src.replicate) {
            // Make them, then look again (the next pass reports them).
            replicated = true;
            for (std::size_t i = 0; i < n;) {
                if (!wants_replica[i]) {
                    ++i;
                    continue;
                }
                std::size_t j = i + 1;
                while (j < n && wants_replica[j]) ++j;
                src.replicate(range.start + i * kPage, range.start + j * kPage);
                i = j;
            }
            std::fill(wants_replica.begin(), wants_replica.end(), 0);
            if (!any) {
                --attempt;   // not a fault pass
                continue;
            }
        }
        if (!any) break;
        if (attempt + 1 == kAttempts) return errc(std::errc::device_or_resource_busy);

        // Fault the unmet pages in, one madvise per run of the same need.
        for (std::size_t i = 0; i < n;) {
            if (need[i] == Need::none) {
                ++i;
                continue;
            }
            std::size_t j = i + 1;
            while (j < n && need[j] == need[i]) ++j;
            const int advice = need[i] == Need::write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
            if (::madvise(reinterpret_cast<void*>(range.start + i * kPage), (j - i) * kPage, advice) != 0) {
                const int err = errno;
                if (err == ENOMEM) {
                    // "Not mapped" and "no memory" share this error: a
                    // munmap may have raced the view. Forget the view and
                    // look again; still mapped, it is the real ENOMEM.
                    view.changed();
                    if (auto ec = view.lookup(range.start + i * kPage, range.start + j * kPage, vmas)) return ec;
                    std::uintptr_t covered = range.start + i * kPage;
                    for (const auto& vm : vmas)
                        if (vm.start <= covered) covered = std::max(covered, vm.end);
                    return errc(covered >= range.start + j * kPage ? std::errc::not_enough_memory
                                                                   : std::errc::bad_address);
                }
                if (err != EINTR && err != EAGAIN) return {err == ENOENT ? EFAULT : err, std::generic_category()};
            }
            i = j;
        }
    }
    if (range.notifier && range.notifier->read_retry(range.notifier_seq))
        return errc(std::errc::device_or_resource_busy);
    return {};
}

}  // namespace uhmm::mirror::detail
