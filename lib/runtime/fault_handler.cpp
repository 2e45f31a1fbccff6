// The fault path and the application's own memory changes (see the header).
#include "runtime/fault_handler.hpp"

#include <algorithm>
#include <chrono>

#include "base/log.hpp"

namespace uhmm {

using space::kPage;
using space::ManagedRange;
using space::PageEntry;
using uffd::FaultDisposition;
using uffd::Status;

namespace {
constexpr std::uintptr_t page_down(std::uintptr_t a) { return a & ~(std::uintptr_t{kPage} - 1); }
// The least a first touch zero-fills (64 KiB, within fault_around): a page
// the program never uses costs 4 KiB, a fault it would take costs ~20 µs.
constexpr std::size_t kFirstTouchPages = 16;
}  // namespace

FaultDisposition FaultHandler::on_fault(const uffd::PageFault& fault) noexcept {
    FaultCounters& c = rt_.fault_counters;
    c.faults.fetch_add(1, std::memory_order_relaxed);
    (fault.wp ? c.faults_wp : c.faults_missing).fetch_add(1, std::memory_order_relaxed);
    const auto t0 = std::chrono::steady_clock::now();
    const FaultDisposition d = serve(fault);
    c.service_ns.record(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()));
    return d;
}

FaultDisposition FaultHandler::serve(const uffd::PageFault& fault) noexcept {
    const std::uintptr_t addr = page_down(fault.address);
    space::RangeRef r = rt_.space.find(addr);
    if (!r) {
        // Registered but not a page we track: the part of a mapping that
        // mremap grew (in place, or beyond what it moved). New memory: zeros.
        if (fault.wp) {
            (void)rt_.uffd->writeprotect(reinterpret_cast<void*>(addr), kPage, false);
            return FaultDisposition::resolved;
        }
        return zero_one(addr);
    }
    const std::size_t page = r->index_of(addr);
    std::lock_guard lock(r->lock_for(page));
    // Replaced while we waited for the lock (manage() carving a hole out):
    // look again on the re-drive.
    if (r->dead()) return FaultDisposition::retry_later;
    PageEntry& e = r->entry(page);
    switch (e.state) {
        case PageState::migrating:
            // A write waits until the copy is done and the page zapped; a read
            // of a zapped page waits until it is recorded on the device.
            if (fault.wp) {
                rt_.fault_counters.write_waits.fetch_add(1, std::memory_order_relaxed);
                return FaultDisposition::retry_later;
            }
            // Copied, and left to the MADV_DONTNEED fallback zap: wait for
            // the record (refilling it now would be zapped with the write).
            if (e.flags & space::kZapped) return FaultDisposition::retry_later;
            // Present when collected and gone now: the application dropped it
            // (its Remove or Unmap event, handled before this fault, set
            // kDiscarded). The copy engine's own read may be the faulting
            // access, so serve zeros; the migration, seeing kRefilled, leaves
            // the page on the host. A never-touched page waits instead.
            if (e.flags & (space::kDiscarded | space::kHadData)) {
                bool installed = false;
                const auto d = zero_one(addr, &installed);
                if (installed) e.flags |= space::kRefilled;
                return d;
            }
            return FaultDisposition::retry_later;
        case PageState::device: {
            if (fault.wp) {
                // A write that waited for the migration, re-driven after the
                // zap: the retried access faults MISSING and comes back here.
                (void)rt_.uffd->wake(reinterpret_cast<void*>(addr), kPage);
                return FaultDisposition::resolved;
            }
            // A page that prefers the device comes home alone (advice).
            const std::size_t window = (e.advice & space::kAdvisePreferDevice)
                                           ? 1
                                           : r->fault_window(page, rt_.config.fault_around / kPage);
            const std::size_t first = page & ~(window - 1);
            return device_fault(*r, page, first, std::min(first + window, r->block_end(page)));
        }
        case PageState::none:
        case PageState::host:
            if (fault.wp) {
                // A write to a read-mostly page with a device replica: the
                // replica goes first, under this lock, so no device read of
                // it can follow the write (device reads check the page table
                // under the same lock); devices holding it hear shortly.
                if (rt_.migration->drop_replica_locked(e)) {
                    rt_.fault_counters.replica_invalidations.fetch_add(1, std::memory_order_relaxed);
                    rt_.delivery->post({addr, addr + kPage, mirror::Event::migrate, true, nullptr});
                }
                // A watched page's first write (watch_writes): note it. Or not
                // ours to hold (a stale protection, or a page moved by mremap
                // with its protection). Either way, let the write through.
                if (e.flags & space::kWatched) {
                    e.flags = static_cast<std::uint8_t>((e.flags & ~space::kWatched) | space::kWritten);
                    rt_.fault_counters.watched_writes.fetch_add(1, std::memory_order_relaxed);
                }
                const auto o = rt_.uffd->writeprotect(reinterpret_cast<void*>(addr), kPage, false);
                return o.status == Status::retry ? FaultDisposition::retry_later : FaultDisposition::resolved;
            }
            // Never-touched pages cost nothing to copy, a fault costs twice
            // the kernel's own first touch: zero-fill at least kFirstTouchPages.
            const std::size_t window = (e.advice & space::kAdvisePreferDevice)
                                           ? 1
                                           : r->fault_window(page, rt_.config.fault_around / kPage, kFirstTouchPages);
            const std::size_t first = page & ~(window - 1);
            return first_touch(*r, page, first, std::min(first + window, r->block_end(page)));
    }
    return FaultDisposition::resolved;
}

FaultDisposition FaultHandler::zero_one(std::uintptr_t addr, bool* installed) noexcept {
    const auto o = rt_.uffd->copy(reinterpret_cast<void*>(addr), rt_.zeros, kPage);
    switch (o.status) {
        case Status::done:
            if (installed) *installed = true;
            return FaultDisposition::resolved;
        case Status::retry:
        case Status::partial: return FaultDisposition::retry_later;
        default:
            // exists: someone resolved it; vanished/gone: nothing left to serve.
            (void)rt_.uffd->wake(reinterpret_cast<void*>(addr), kPage);
            return FaultDisposition::resolved;
    }
}

FaultDisposition FaultHandler::device_fault(ManagedRange& r, std::size_t page, std::size_t first,
                                            std::size_t last) noexcept {
    // Copies without waking: the woken thread may read the statistics or the
    // page states at once, so they are updated first, then one wake.
    const auto h = rt_.migration->bring_home_locked(r, first, last, false);
    rt_.fault_counters.device_faults.fetch_add(1, std::memory_order_relaxed);
    rt_.fault_counters.pages_to_host_on_fault.fetch_add(h.pages, std::memory_order_relaxed);
    if (h.pages) {
        (void)rt_.uffd->wake(reinterpret_cast<void*>(r.address_of(first)), (last - first) * kPage);
        // Device pages of the window came home: mirrors holding them drop them.
        rt_.delivery->post({r.address_of(first), r.address_of(last), mirror::Event::migrate, true, nullptr});
    }
    if (r.entry(page).state != PageState::device) return FaultDisposition::resolved;
    switch (h.status) {
        case Status::retry: return FaultDisposition::retry_later;
        case Status::vanished:
        case Status::gone:
            (void)rt_.uffd->wake(reinterpret_cast<void*>(r.address_of(page)), kPage);
            return FaultDisposition::resolved;
        default:
            // The page cannot come home (copy error): keep the thread waiting
            // and try again rather than hand it wrong data.
            log::get().error("fault at {:#x}: device page {} cannot come home: {}", r.address_of(page),
                             r.entry(page).device, std::generic_category().message(h.error));
            return FaultDisposition::retry_later;
    }
}

FaultDisposition FaultHandler::first_touch(ManagedRange& r, std::size_t page, std::size_t first,
                                           std::size_t last) noexcept {
    // Zero-fill the never-touched pages of the window (and the faulting page,
    // whatever its record says: it is missing), in runs, one ioctl per run.
    // UFFDIO_COPY rather than ZEROPAGE: a write to the shared zero page would
    // take a second (kernel) fault per page.
    rt_.fault_counters.first_touch_faults.fetch_add(1, std::memory_order_relaxed);
    auto wanted = [&](std::size_t p) { return p == page || r.entry(p).state == PageState::none; };
    std::size_t filled = 0;
    bool faulting_done = false;
    for (std::size_t i = first; i < last;) {
        if (!wanted(i)) {
            ++i;
            continue;
        }
        std::size_t j = i + 1;
        while (j < last && wanted(j)) ++j;
        auto o = rt_.uffd->copy(reinterpret_cast<void*>(r.address_of(i)), rt_.zeros, (j - i) * kPage, false);
        std::size_t done = o.ok() ? j - i : o.bytes / kPage;
        for (std::size_t k = i; k < i + done; ++k) r.entry(k).state = PageState::host;
        filled += done;
        if (page >= i && page < i + done) faulting_done = true;
        if (o.ok()) {
            i = j;
            continue;
        }
        if (o.status == Status::exists) {
            // That page is present already (not through us): it is HOST.
            const std::size_t present = i + done;
            r.entry(present).state = PageState::host;
            if (present == page) faulting_done = true;
            i = present + 1;
            continue;
        }
        if (o.status == Status::retry || o.status == Status::partial) {
            rt_.fault_counters.pages_zero_filled.fetch_add(filled, std::memory_order_relaxed);
            if (filled) (void)rt_.uffd->wake(reinterpret_cast<void*>(r.address_of(first)), (last - first) * kPage);
            return faulting_done ? FaultDisposition::resolved : FaultDisposition::retry_later;
        }
        // vanished / gone / failed: nothing more can be served here.
        if (o.status == Status::failed)
            log::get().error("first touch at {:#x}: UFFDIO_COPY failed: {}", r.address_of(page),
                             std::generic_category().message(o.error));
        break;
    }
    // Counted before the wake: the woken thread may read the statistics.
    rt_.fault_counters.pages_zero_filled.fetch_add(filled, std::memory_order_relaxed);
    (void)rt_.uffd->wake(reinterpret_cast<void*>(r.address_of(first)), (last - first) * kPage);
    return FaultDisposition::resolved;
}

// ---- the application's own changes -------------------------------------------------

void FaultHandler::on_remove(const uffd::Remove& r) noexcept {
    if (rt_.zaps.is_own(r.start, r.end)) return;   // our zap after a copy to the device
    rt_.delivery->post({r.start, r.end, mirror::Event::clear, true, nullptr});
    invalidate(r.start, r.end, false);
}

void FaultHandler::on_unmap(const uffd::Unmap& u) noexcept {
    rt_.view.changed();
    rt_.delivery->post({u.start, u.end, mirror::Event::unmap, true, nullptr});
    invalidate(u.start, u.end, true);
}

void FaultHandler::invalidate(std::uintptr_t start, std::uintptr_t end, bool unmapped) noexcept {
    for (space::RangeRef r = rt_.space.first_ending_after(start); r && r->start() < end;
         r = rt_.space.first_ending_after(r->end())) {
        const std::uintptr_t a = std::max(start, r->start()), b = std::min(end, r->end());
        for (std::size_t p = r->index_of(a), last = r->index_of(b); p < last;) {
            const std::size_t first = p, block_end = std::min(last, r->block_end(p));
            std::lock_guard lock(r->lock_for(p));
            for (; p < block_end; ++p) {
                PageEntry& e = r->entry(p);
                if (e.state == PageState::migrating) e.flags |= space::kDiscarded;   // its migration frees it
                else rt_.migration->discard_locked(e);
            }
            // madvise zaps the pages only after this event is read, maybe
            // after a migration has collected and copied them as if they
            // still held data. Zap them now, under the lock, so that from
            // here on the table and the page tables agree (MADV_FREE's pages
            // are freed at once: a state the kernel may also choose).
            if (!unmapped && rt_.zapper)
                (void)rt_.zapper->zap(r->address_of(first), (block_end - first) * kPage);
        }
        if (unmapped && a == r->start() && b == r->end()) {
            rt_.space.remove(r.get());
            continue;
        }
        if (!unmapped) continue;
        // A hole: its pages are no longer the application's (migrate() there
        // fails them; manage() of new memory there carves them out).
        for (std::size_t p = r->index_of(a), last = r->index_of(b); p < last;) {
            const std::size_t block_end = std::min(last, r->block_end(p));
            std::lock_guard lock(r->lock_for(p));
            for (; p < block_end; ++p) r->entry(p).flags |= space::kUnmapped;
        }
    }
}

space::RangeRef FaultHandler::destination(std::uintptr_t addr, std::uintptr_t limit, bool owned) noexcept {
    if (auto r = rt_.space.find(addr)) return r;
    if (auto next = rt_.space.first_ending_after(addr)) limit = std::min(limit, next->start());
    ManagedRange* created = ManagedRange::create(addr, (limit - addr) / kPage, owned);
    if (!created) return {};
    if (!rt_.space.insert(created)) created->put();
    return rt_.space.find(addr);
}

void FaultHandler::on_remap(const uffd::Remap& m) noexcept {
    // mremap moved [from, from+len) to [to, to+len), PTEs and all: each page's
    // record follows it. DEVICE pages keep their device page; a MIGRATING
    // page's host page moved (its migration, finding it dropped, frees the
    // device copy). Read, then write, one lock at a time.
    rt_.view.changed();
    rt_.delivery->post({m.from, m.from + m.len, mirror::Event::unmap, true, nullptr});
    const std::uintptr_t to_end = m.to + m.len;
    space::RangeRef src, dst;
    for (std::uintptr_t off = 0; off < m.len; off += kPage) {
        const std::uintptr_t s = m.from + off, d = m.to + off;
        if (!src || !src->contains(s)) src = rt_.space.find(s);
        if (!src) continue;   // not managed: the destination learns nothing
        PageEntry moved;
        {
            const std::size_t p = src->index_of(s);
            std::lock_guard lock(src->lock_for(p));
            PageEntry& e = src->entry(p);
            rt_.migration->drop_replica_locked(e);   // devices heard "unmap" above
            moved = e;
            if (e.state == PageState::migrating) {
                e.flags |= space::kDiscarded;
            } else {
                e.state = PageState::none;
                e.flags = 0;
            }
            e.advice = 0;   // advice goes with the page
        }
        if (moved.state == PageState::migrating) moved = PageEntry{0, PageState::host, 0, 0, moved.advice};
        if (!dst || !dst->contains(d)) dst = destination(d, to_end, src->owned());
        if (!dst) {
            // No memory for a table: the page is still in the mapping, but a
            // device page can no longer be found. Say so loudly.
            if (moved.state == PageState::device) {
                log::get().error("mremap to {:#x}: no memory for a page table; device page {} lost", d, moved.device);
                (void)rt_.arena->put(moved.device);
            }
            continue;
        }
        const std::size_t p = dst->index_of(d);
        std::lock_guard lock(dst->lock_for(p));
        PageEntry& e = dst->entry(p);
        if (e.state == PageState::device) rt_.migration->discard_locked(e);
        e = moved;
        e.flags = 0;
    }
}

}  // namespace uhmm
