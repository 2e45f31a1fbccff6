// Read-mostly replicas (see migration.hpp): a device's read-only copy of a
// page that stays on the host.
//
// Making one, block by block:
//   1. under the block lock: each HOST read-mostly page without a replica
//      gets a device page and is write-protected (from here a CPU write
//      faults), and is marked kReplica | kReplicaFilling;
//   2. without the lock: the host pages are copied to their device pages,
//      each held by a reference of ours (a CPU fault touching the page
//      meanwhile is served as usual; nothing here waits for the fault thread
//      while holding a lock it takes);
//   3. under the lock again: pages still carrying the same replica lose
//      kReplicaFilling and are from then on reported to devices. A CPU
//      write during the copy took the write-protect fault, which dropped the
//      replica (fault_handler.cpp): our reference kept the page from reuse,
//      and dropping it now frees it.
// A write-protect fault on a replicated page drops the replica under the
// block lock before it lets the write through, and device code reads a
// replica only under that lock (Runtime::device_page_read with an address):
// no device read returns the old data once a CPU write has completed.
#include <thread>
#include <vector>

#include "base/log.hpp"
#include "migrate/migration.hpp"

namespace uhmm::migrate {

using space::kPage;
using space::ManagedRange;
using space::PageEntry;

namespace {
// A protection the kernel asked us to retry (EAGAIN: an address-space
// change waits for the fault thread) is tried again this many times, the
// block lock dropped in between.
constexpr int kProtectAttempts = 8;
constexpr devmem::PageIndex kNone = ~devmem::PageIndex{0};   // a slot whose page went back
}  // namespace

bool Migration::drop_replica_locked(PageEntry& e) noexcept {
    if (e.state != PageState::host || !(e.flags & space::kReplica)) return false;
    (void)c_.arena.put(e.device);
    // One still filling was never counted as made.
    if (!(e.flags & space::kReplicaFilling)) c_.counters.replicas_dropped.fetch_add(1, std::memory_order_relaxed);
    e.flags = static_cast<std::uint8_t>(e.flags & ~(space::kReplica | space::kReplicaFilling));
    return true;
}

void Migration::replicate(ManagedRange& r, std::size_t first, std::size_t count, MigrateResult& out) {
    out.requested += count;
    const std::size_t last = first + count;
    std::vector<std::size_t> pages;
    std::vector<devmem::PageIndex> devs;
    std::vector<CopyOp> ops;
    auto fail = [&](std::size_t n, std::error_code why) {
        out.failed += n;
        if (!out.error && n) out.error = why;
    };
    for (std::size_t p = first; p < last;) {
        const std::size_t end = std::min(last, r.block_end(p));
        pages.clear();
        devs.clear();
        bool protected_all = false;
        for (int attempt = 0; attempt < kProtectAttempts && !protected_all; ++attempt) {
            std::unique_lock lock(r.lock_for(p));
            pages.clear();
            devs.clear();
            std::error_code alloc_error;
            std::size_t failed_here = 0, already_here = 0;
            for (std::size_t q = p; q < end; ++q) {
                PageEntry& e = r.entry(q);
                if (e.flags & space::kUnmapped) {
                    ++failed_here;
                    if (!alloc_error) alloc_error = std::make_error_code(std::errc::bad_address);
                } else if (e.state == PageState::migrating) {
                    ++failed_here;
                    if (!alloc_error) alloc_error = std::make_error_code(std::errc::device_or_resource_busy);
                } else if (e.state != PageState::host || (e.flags & space::kReplica) ||
                           !(e.advice & space::kAdviseReadMostly)) {
                    ++already_here;
                } else if (auto d = c_.arena.alloc(c_.owner)) {
                    pages.push_back(q);
                    devs.push_back(*d);
                } else {
                    ++failed_here;
                    if (!alloc_error) alloc_error = d.error();
                }
            }
            // Protect runs of the chosen pages, one ioctl per run; the
            // kernel's EAGAIN gives everything back and tries the block again.
            bool retry = false;
            for (std::size_t i = 0; i < pages.size() && !retry;) {
                std::size_t j = i + 1;
                while (j < pages.size() && pages[j] == pages[j - 1] + 1) ++j;
                const auto o = c_.uffd.writeprotect(reinterpret_cast<void*>(r.address_of(pages[i])),
                                                    (j - i) * kPage, true);
                if (o.status == uffd::Status::retry) {
                    retry = true;
                    break;
                }
                for (std::size_t k = i; k < j; ++k) {
                    PageEntry& e = r.entry(pages[k]);
                    if (o.ok()) {
                        e.device = devs[k];
                        e.flags |= space::kReplica | space::kReplicaFilling;
                        (void)c_.arena.get(devs[k]);   // ours, for the copy
                    } else {
                        (void)c_.arena.put(devs[k]);
                        devs[k] = kNone;
                        ++failed_here;
                        if (!alloc_error) alloc_error = errno_code(o.error ? o.error : EIO);
                    }
                }
                i = j;
            }
            if (retry) {
                // Undo the runs protected so far (their pages keep a stale
                // protection, which the fault path lifts on a write).
                for (std::size_t k = 0; k < pages.size(); ++k) {
                    PageEntry& e = r.entry(pages[k]);
                    if (devs[k] != kNone && (e.flags & space::kReplica) && e.device == devs[k]) {
                        e.flags = static_cast<std::uint8_t>(e.flags & ~(space::kReplica | space::kReplicaFilling));
                        (void)c_.arena.put(devs[k]);   // our copy's reference
                    }
                    if (devs[k] != kNone) (void)c_.arena.put(devs[k]);
                }
                lock.unlock();
                std::this_thread::yield();
                continue;
            }
            out.already_there += already_here;
            fail(failed_here, alloc_error);
            // Keep only the pages that now carry a replica in the making.
            std::size_t kept = 0;
            for (std::size_t k = 0; k < pages.size(); ++k)
                if (devs[k] != kNone) {
                    pages[kept] = pages[k];
                    devs[kept] = devs[k];
                    ++kept;
                }
            pages.resize(kept);
            devs.resize(kept);
            protected_all = true;
        }
        if (!protected_all) {
            fail(end - p, std::make_error_code(std::errc::resource_unavailable_try_again));
            p = end;
            continue;
        }
        // 2. The copies, without the lock.
        std::error_code copy_error;
        if (!pages.empty()) {
            ops.clear();
            for (std::size_t k = 0; k < pages.size(); ++k)
                ops.push_back({reinterpret_cast<void*>(r.address_of(pages[k])), devmem::ArenaView::offset_of(devs[k]),
                               static_cast<std::uint32_t>(kPage)});
            c_.engine.set_arena_size(c_.arena.view().size);
            auto fence = c_.engine.submit(Direction::to_device, ops);
            c_.counters.copy_batches.fetch_add(1, std::memory_order_relaxed);
            copy_error = fence.wait();
        }
        // 3. Publish what is still ours, drop our references.
        {
            std::lock_guard lock(r.lock_for(p));
            for (std::size_t k = 0; k < pages.size(); ++k) {
                PageEntry& e = r.entry(pages[k]);
                const bool ours = e.state == PageState::host && (e.flags & space::kReplica) && e.device == devs[k];
                if (ours && !copy_error) {
                    e.flags = static_cast<std::uint8_t>(e.flags & ~space::kReplicaFilling);
                    ++out.migrated;
                    out.bytes += kPage;
                    c_.counters.replicas_made.fetch_add(1, std::memory_order_relaxed);
                } else if (ours) {
                    // The copy failed: no replica (the protection stays until a write lifts it).
                    e.flags = static_cast<std::uint8_t>(e.flags & ~(space::kReplica | space::kReplicaFilling));
                    (void)c_.arena.put(devs[k]);
                    fail(1, copy_error);
                } else {
                    // A CPU write (or a move, a discard) took it meanwhile: the
                    // page is where the application last put it. Counted as
                    // already there: its newest data is on the host.
                    ++out.already_there;
                }
                (void)c_.arena.put(devs[k]);   // our copy's reference
            }
        }
        p = end;
    }
}

}  // namespace uhmm::migrate
