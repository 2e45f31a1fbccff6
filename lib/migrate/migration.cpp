// Migration to the device and home (see migration.hpp for the protocol).
#include "migrate/migration.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <thread>
#include <vector>

#include "base/log.hpp"
#include "space/proc_maps.hpp"

namespace uhmm::migrate {

using space::kPage;
using space::ManagedRange;
using space::PageEntry;

namespace {

// The source of never-touched pages for arenas without a CPU mapping.
alignas(4096) const std::byte kZeroPage[4096] = {};

std::error_code outcome_error(const uffd::Outcome& o) {
    return errno_code(o.error ? o.error : EIO);
}

// Pause before retrying an ioctl that said EAGAIN: the fault thread is
// reading the event behind it.
void back_off() { std::this_thread::yield(); }

}  // namespace

struct Migration::Batch {
    std::size_t first = 0, count = 0;
    std::uint16_t owner = 0;                    // who asked (recorded in DEVICE entries)
    std::vector<std::size_t> pages;             // pages this batch made MIGRATING, ascending
    std::vector<devmem::PageIndex> devs;        // their device pages
    std::vector<std::uint8_t> had_data;         // present (or swapped) when collected
    std::vector<std::uint8_t> ok;               // still on course (not failed)
    std::vector<CopyOp> ops;
    std::vector<std::pair<std::size_t, std::size_t>> op_pages;   // op → [begin, end) in pages
    Fence fence;
    std::uint64_t copied = 0;
};

// ---- to the device --------------------------------------------------------------

void Migration::collect(ManagedRange& r, std::size_t first, std::size_t count, Batch& b, MigrateResult& out) {
    b.first = first;
    b.count = count;
    const std::size_t last = first + count;

    // How many pages need a device page (under the locks: the states change
    // under them). The count may be stale by the time they are taken: a
    // shortfall is a failed page, a surplus goes back.
    std::size_t wanted = 0;
    for (std::size_t p = first; p < last;) {
        const std::size_t end = std::min(last, r.block_end(p));
        std::lock_guard lock(r.lock_for(p));
        for (; p < end; ++p) {
            const auto s = r.entry(p).state;
            wanted += s != PageState::device && s != PageState::migrating;
        }
    }
    std::vector<devmem::PageIndex> free_devs(wanted);
    std::size_t have = 0;
    std::error_code alloc_error;
    if (wanted) {
        if (auto runs = c_.arena.alloc_run(wanted, c_.owner, free_devs)) {
            have = wanted;
        } else {
            // Not enough for all: take what there is, page by page.
            for (; have < wanted; ++have) {
                auto one = c_.arena.alloc(c_.owner);
                if (!one) {
                    alloc_error = one.error();
                    break;
                }
                free_devs[have] = *one;
            }
        }
    }

    free_devs.resize(have);
    // The count was taken under the locks but they were dropped since: a page
    // that came home meanwhile needs one more device page, taken on the spot
    // (allocation never touches managed memory, so it may run under a lock).
    auto top_up = [&](std::vector<devmem::PageIndex>& devs, std::size_t& n, std::error_code& err) {
        if (err) return false;
        auto one = c_.arena.alloc(c_.owner);
        if (!one) {
            err = one.error();
            return false;
        }
        devs.push_back(*one);
        ++n;
        return true;
    };
    std::size_t next_dev = 0;
    for (std::size_t p = first; p < last;) {
        const std::size_t end = std::min(last, r.block_end(p));
        std::lock_guard lock(r.lock_for(p));
        for (; p < end; ++p) {
            PageEntry& e = r.entry(p);
            if (e.flags & space::kUnmapped) {
                ++out.failed;   // a hole munmap left
                if (!out.error) out.error = std::make_error_code(std::errc::bad_address);
            } else if (e.state == PageState::device) {
                ++out.already_there;
            } else if (e.state == PageState::migrating) {
                ++out.failed;   // another migration has it
                if (!out.error) out.error = std::make_error_code(std::errc::device_or_resource_busy);
            } else if (next_dev < have || top_up(free_devs, have, alloc_error)) {
                drop_replica_locked(e);   // the page itself goes: its copy has no use
                e.state = PageState::migrating;
                e.device = free_devs[next_dev++];
                e.flags = 0;
                b.pages.push_back(p);
                b.devs.push_back(e.device);
            } else {
                ++out.failed;
                if (!out.error) out.error = alloc_error ? alloc_error : std::make_error_code(std::errc::not_enough_memory);
            }
        }
    }
    for (std::size_t i = next_dev; i < have; ++i) (void)c_.arena.put(free_devs[i]);

    // Which MIGRATING pages hold data. Read after marking them: from here on
    // an absent page stays absent (its first touch waits for us).
    b.had_data.assign(b.pages.size(), 0);
    b.ok.assign(b.pages.size(), 1);
    if (b.pages.empty()) return;
    const std::size_t span_first = b.pages.front(), span = b.pages.back() - span_first + 1;
    std::vector<std::uint64_t> pm(span);
    if (auto ec = space::read_pagemap(c_.pagemap_fd, r.address_of(span_first), span, pm.data())) {
        // Without pagemap, treat every page as holding data: copying a hole
        // just reads zeros through a first-touch fault.
        log::get().warn("migrate: /proc/self/pagemap unreadable ({}); copying every page", ec.message());
        std::fill(b.had_data.begin(), b.had_data.end(), 1);
        return;
    }
    for (std::size_t i = 0; i < b.pages.size(); ++i)
        b.had_data[i] = (pm[b.pages[i] - span_first] & (space::kPagemapPresent | space::kPagemapSwapped)) != 0;
}

void Migration::fail_page(ManagedRange& r, std::size_t page, std::error_code why, MigrateResult& out) noexcept {
    std::lock_guard lock(r.lock_for(page));
    PageEntry& e = r.entry(page);
    (void)c_.arena.put(e.device);
    // Back where it was: on the host if it had data or was refilled since,
    // never-touched (or dropped by the application) otherwise.
    const bool dropped = e.flags & space::kDiscarded;
    const bool on_host = (e.flags & space::kRefilled) || (!dropped && (e.flags & space::kHadData));
    e.state = on_host ? PageState::host : PageState::none;
    e.flags &= space::kUnmapped;
    ++out.failed;
    if (!out.error) out.error = why;
}

void Migration::freeze_and_submit(ManagedRange& r, Batch& b, MigrateResult& out) {
    const auto n = b.pages.size();
    // Freeze: write-protect runs of present pages (one ioctl per run).
    for (std::size_t i = 0; i < n;) {
        if (!b.had_data[i]) {
            ++i;
            continue;
        }
        std::size_t j = i + 1;
        while (j < n && b.had_data[j] && b.pages[j] == b.pages[j - 1] + 1) ++j;
        {
            // kHadData tells a failed page to go back to HOST, not NONE.
            for (std::size_t k = i; k < j; ++k) {
                std::lock_guard lock(r.lock_for(b.pages[k]));
                r.entry(b.pages[k]).flags |= space::kHadData;
            }
        }
        const auto addr = reinterpret_cast<void*>(r.address_of(b.pages[i]));
        uffd::Outcome o;
        while ((o = c_.uffd.writeprotect(addr, (j - i) * kPage, true)).status == uffd::Status::retry) back_off();
        if (!o.ok()) {
            for (std::size_t k = i; k < j; ++k) {
                b.ok[k] = 0;
                fail_page(r, b.pages[k], outcome_error(o), out);
            }
        }
        i = j;
    }

    // Never-touched pages: zero device pages, no copy from the host.
    for (std::size_t i = 0; i < n; ++i) {
        if (b.had_data[i] || !b.ok[i]) continue;
        if (std::byte* dst = c_.arena.address(b.devs[i])) {
            std::memset(dst, 0, kPage);
        } else {
            b.ops.push_back({const_cast<std::byte*>(kZeroPage), devmem::ArenaView::offset_of(b.devs[i]),
                             static_cast<std::uint32_t>(kPage)});
            b.op_pages.push_back({i, i + 1});
        }
    }
    // Present pages: one op per run contiguous on both sides.
    for (std::size_t i = 0; i < n;) {
        if (!b.had_data[i] || !b.ok[i]) {
            ++i;
            continue;
        }
        std::size_t j = i + 1;
        while (j < n && b.had_data[j] && b.ok[j] && b.pages[j] == b.pages[j - 1] + 1 &&
               b.devs[j] == b.devs[j - 1] + 1)
            ++j;
        b.ops.push_back({reinterpret_cast<void*>(r.address_of(b.pages[i])), devmem::ArenaView::offset_of(b.devs[i]),
                         static_cast<std::uint32_t>((j - i) * kPage)});
        b.op_pages.push_back({i, j});
        i = j;
    }
    if (b.ops.empty()) return;
    // The arena may have grown for this batch's pages; the engine checks ops
    // against the size it was told.
    c_.engine.set_arena_size(c_.arena.view().size);
    b.fence = c_.engine.submit(Direction::to_device, b.ops);
    c_.counters.copy_batches.fetch_add(1, std::memory_order_relaxed);
}

void Migration::finish(ManagedRange& r, Batch& b, MigrateResult& out) {
    const auto n = b.pages.size();
    if (!b.ops.empty()) {
        b.fence.wait();
        const auto results = b.fence.results();
        for (std::size_t o = 0; o < b.ops.size(); ++o) {
            const auto [from, to] = b.op_pages[o];
            if (o < results.size() && !results[o].error && results[o].bytes == b.ops[o].len) {
                if (b.had_data[from]) b.copied += b.ops[o].len;
                continue;
            }
            const auto why = o < results.size() && results[o].error ? results[o].error
                                                                     : std::make_error_code(std::errc::io_error);
            for (std::size_t k = from; k < to; ++k) {
                if (b.had_data[k]) {
                    // Thaw: the page stays on the host, writable again.
                    (void)c_.uffd.writeprotect(reinterpret_cast<void*>(r.address_of(b.pages[k])), kPage, false);
                }
                b.ok[k] = 0;
                fail_page(r, b.pages[k], why, out);
            }
        }
    }

    // Zap the copied host pages and record DEVICE, one block at a time under
    // its lock: a page the application dropped meanwhile is left alone (what
    // is there now is not what was copied), and no fault can refill a page
    // between that check and the zap.
    std::vector<std::size_t> fallback;   // indexes into b.pages: MOVE refused them
    std::size_t moved = 0;
    for (std::size_t i = 0; i < n;) {
        const std::size_t end = r.block_end(b.pages[i]);
        std::lock_guard lock(r.lock_for(b.pages[i]));
        std::size_t j = i;
        while (j < n && b.pages[j] < end) ++j;
        auto zappable = [&](std::size_t k) {
            return b.ok[k] && b.had_data[k] && !(r.entry(b.pages[k]).flags & (space::kDiscarded | space::kRefilled));
        };
        const std::size_t fallback_before = fallback.size();
        for (std::size_t k = i; k < j;) {
            if (!zappable(k)) {
                ++k;
                continue;
            }
            std::size_t e = k + 1;
            while (e < j && zappable(e) && b.pages[e] == b.pages[e - 1] + 1) ++e;
            zap_run_locked(r, b, k, e, fallback);
            k = e;
        }
        for (std::size_t f = fallback_before; f < fallback.size(); ++f)
            r.entry(b.pages[fallback[f]]).flags |= space::kZapped;
        for (std::size_t k = i; k < j; ++k) {
            PageEntry& e = r.entry(b.pages[k]);
            if (!b.ok[k] || (e.flags & space::kZapped)) continue;
            record_locked(e, b.owner);
            ++moved;
        }
        i = j;
    }
    moved += zap_by_madvise(r, b, fallback);
    out.migrated += moved;
    out.bytes += b.copied;
    c_.counters.pages_to_device.fetch_add(moved, std::memory_order_relaxed);
    c_.counters.bytes_to_device.fetch_add(b.copied, std::memory_order_relaxed);
    if (n) {
        const std::size_t span = b.pages.back() + 1 - b.pages.front();
        (void)c_.uffd.wake(reinterpret_cast<void*>(r.address_of(b.pages.front())), span * kPage);
    }
}

void Migration::record_locked(PageEntry& e, std::uint16_t owner) noexcept {
    if (e.flags & (space::kDiscarded | space::kRefilled)) {
        // The application dropped it while it moved (or it vanished under
        // the copy): the copy is not the page's content. A refilled page is
        // on the host now, the rest read as zero.
        (void)c_.arena.put(e.device);
        e.state = (e.flags & space::kRefilled) ? PageState::host : PageState::none;
        c_.counters.pages_discarded.fetch_add(1, std::memory_order_relaxed);
    } else {
        e.state = PageState::device;
        e.owner = owner;
    }
    e.flags &= space::kUnmapped;
}

void Migration::zap_run_locked(ManagedRange& r, const Batch& b, std::size_t k, std::size_t e,
                               std::vector<std::size_t>& fallback) noexcept {
    // Pages [k, e) of the batch, contiguous, in one block whose lock is held.
    for (std::size_t at = k; at < e;) {
        if (!c_.zapper) {
            for (; at < e; ++at) fallback.push_back(at);
            return;
        }
        // A page already gone from its address was taken by the application
        // (DONTNEED, munmap, or mremap moving it elsewhere, data and all)
        // after it was copied, and its event may still be unread: the copy is
        // not this address's content any more. Flag it discarded, so it is
        // recorded NONE and its device page freed, never DEVICE (a DEVICE
        // record that mremap then carries to where the host page went would
        // make every write there fault for good).
        std::array<std::uint64_t, space::kBlockPages / 64> absent{};
        const auto z = c_.zapper->zap(r.address_of(b.pages[at]), (e - at) * kPage, absent.data());
        for (std::size_t i = 0; i < z.bytes / kPage; ++i)
            if (absent[i / 64] >> (i % 64) & 1) r.entry(b.pages[at + i]).flags |= space::kDiscarded;
        at += z.bytes / kPage;
        if (at < e) fallback.push_back(at++);   // refused (shared, read-only): MADV_DONTNEED
    }
}

std::size_t Migration::zap_by_madvise(ManagedRange& r, Batch& b, const std::vector<std::size_t>& pages) {
    // The fallback: MADV_DONTNEED sends a Remove event and waits for its read,
    // so it runs unlocked, claimed in SelfZaps; the pages are kZapped, so a
    // fault on them waits for the record below rather than refilling them.
    for (std::size_t i = 0; i < pages.size();) {
        std::size_t j = i + 1;
        while (j < pages.size() && b.pages[pages[j]] == b.pages[pages[j - 1]] + 1) ++j;
        const std::uintptr_t from = r.address_of(b.pages[pages[i]]), to = r.address_of(b.pages[pages[j - 1]] + 1);
        SelfZaps::Claim claim(c_.zaps, from, to);
        // ENOMEM: the application unmapped it meanwhile (its Unmap event
        // marks the pages discarded): nothing to zap.
        (void)::madvise(reinterpret_cast<void*>(from), to - from, MADV_DONTNEED);
        if (c_.events_handled) c_.events_handled();
        i = j;
    }
    for (std::size_t i : pages) {
        std::lock_guard lock(r.lock_for(b.pages[i]));
        record_locked(r.entry(b.pages[i]), b.owner);
    }
    return pages.size();
}

void Migration::to_device(ManagedRange& r, std::size_t first, std::size_t count, MigrateResult& out,
                          std::uint16_t owner) {
    out.requested += count;
    const std::size_t failed_before = out.failed;
    const std::size_t step = std::max<std::size_t>(1, c_.batch_pages);
    // Two batches in flight: the copy of one overlaps collecting and freezing
    // the next (pagemap, locks, WRITEPROTECT are kernel entries, not bandwidth).
    Batch batches[2];
    Batch* prev = nullptr;
    int cur = 0;
    for (std::size_t p = first; p < first + count; p += step) {
        Batch& b = batches[cur];
        b = Batch{};
        b.owner = owner;
        collect(r, p, std::min(step, first + count - p), b, out);
        freeze_and_submit(r, b, out);
        if (prev) finish(r, *prev, out);
        prev = &b;
        cur ^= 1;
    }
    if (prev) finish(r, *prev, out);
    c_.counters.failed_pages.fetch_add(out.failed - failed_before, std::memory_order_relaxed);
}

// ---- home ---------------------------------------------------------------------------

HomeOutcome Migration::copy_home(std::uintptr_t dst, devmem::PageIndex first_device, std::size_t pages, bool wake) noexcept {
    HomeOutcome h;
    const std::size_t len = pages * kPage;
    if (const std::byte* src = c_.arena.address(first_device)) {
        const auto o = c_.uffd.copy(reinterpret_cast<void*>(dst), src, len, wake);
        h.pages = o.ok() ? pages : o.bytes / kPage;
        h.bytes = h.pages * kPage;
        h.status = o.status == uffd::Status::partial ? uffd::Status::retry : o.status;
        h.error = o.error;
        return h;
    }
    // No CPU mapping (GPU memory): through a staging buffer of the engine.
    try {
        std::size_t done = 0;
        while (done < pages) {
            auto staging = c_.engine.acquire_staging();
            if (!staging) {
                if (staging.error() == std::errc::resource_unavailable_try_again) {
                    back_off();
                    continue;
                }
                h.status = uffd::Status::failed;
                h.error = staging.error().value();
                return h;
            }
            const std::size_t n = std::min(pages - done, staging->size() / kPage);
            const CopyOp op{staging->data(), devmem::ArenaView::offset_of(first_device + static_cast<std::uint32_t>(done)),
                            static_cast<std::uint32_t>(n * kPage)};
            auto fence = c_.engine.submit(Direction::to_host, {&op, 1});
            c_.counters.copy_batches.fetch_add(1, std::memory_order_relaxed);
            if (auto ec = fence.wait()) {
                h.status = uffd::Status::failed;
                h.error = ec.value();
                return h;
            }
            const auto o = c_.uffd.copy(reinterpret_cast<void*>(dst + done * kPage), staging->data(), n * kPage, wake);
            const std::size_t ok_pages = o.ok() ? n : o.bytes / kPage;
            done += ok_pages;
            h.pages = done;
            h.bytes = done * kPage;
            if (!o.ok()) {
                h.status = o.status == uffd::Status::partial ? uffd::Status::retry : o.status;
                h.error = o.error;
                return h;
            }
        }
    } catch (...) {
        h.status = uffd::Status::failed;
        h.error = ENOMEM;
    }
    return h;
}

HomeOutcome Migration::bring_home_locked(ManagedRange& r, std::size_t first, std::size_t last, bool wake) noexcept {
    HomeOutcome total;
    std::size_t i = first;
    while (i < last) {
        PageEntry& e = r.entry(i);
        if (e.state != PageState::device) {
            ++i;
            continue;
        }
        std::size_t j = i + 1;
        while (j < last && r.entry(j).state == PageState::device && r.entry(j).device == e.device + (j - i)) ++j;
        const HomeOutcome h = copy_home(r.address_of(i), e.device, j - i, wake);
        for (std::size_t k = i; k < i + h.pages; ++k) {
            PageEntry& done = r.entry(k);
            (void)c_.arena.put(done.device);
            done.state = PageState::host;
            done.flags = 0;
        }
        total.pages += h.pages;
        total.bytes += h.bytes;
        if (h.status == uffd::Status::done) {
            i = j;
            continue;
        }
        if (h.status == uffd::Status::exists) {
            // A page is already there (served by a racing zero-fill of a page
            // the application dropped): the CPU's page wins.
            PageEntry& present = r.entry(i + h.pages);
            (void)c_.arena.put(present.device);
            present.state = PageState::host;
            present.flags = 0;
            i += h.pages + 1;
            continue;
        }
        total.status = h.status;
        total.error = h.error;
        break;
    }
    c_.counters.pages_to_host.fetch_add(total.pages, std::memory_order_relaxed);
    c_.counters.bytes_to_host.fetch_add(total.bytes, std::memory_order_relaxed);
    return total;
}

void Migration::discard_locked(PageEntry& e) noexcept {
    drop_replica_locked(e);
    if (e.state == PageState::device) {
        (void)c_.arena.put(e.device);
        c_.counters.pages_discarded.fetch_add(1, std::memory_order_relaxed);
    }
    e.state = PageState::none;
    e.flags = 0;
}

void Migration::to_host(ManagedRange& r, std::size_t first, std::size_t count, MigrateResult& out) {
    out.requested += count;
    const std::size_t failed_before = out.failed;
    const std::size_t last = first + count;
    for (std::size_t p = first; p < last;) {
        const std::size_t end = std::min(last, r.block_end(p));
        std::size_t on_device = 0, still_on_device = 0;
        bool counted = false;
        for (;;) {
            std::unique_lock lock(r.lock_for(p));
            if (!counted) {
                for (std::size_t k = p; k < end; ++k) {
                    const auto s = r.entry(k).state;
                    if (s == PageState::device) {
                        ++on_device;
                    } else if (s == PageState::migrating) {
                        ++out.failed;
                        if (!out.error) out.error = std::make_error_code(std::errc::device_or_resource_busy);
                    } else {
                        ++out.already_there;
                    }
                }
                counted = true;
            }
            const HomeOutcome h = bring_home_locked(r, p, end);
            out.bytes += h.bytes;
            if (h.status == uffd::Status::retry) {
                // The fault thread must read an event first: let it, unlocked.
                // (Meanwhile faults may bring some of these pages home too.)
                lock.unlock();
                back_off();
                continue;
            }
            if (h.status != uffd::Status::done && h.status != uffd::Status::exists && !out.error)
                out.error = errno_code(h.error ? h.error : EIO);
            for (std::size_t k = p; k < end; ++k) still_on_device += r.entry(k).state == PageState::device;
            break;
        }
        still_on_device = std::min(still_on_device, on_device);
        out.migrated += on_device - still_on_device;
        out.failed += still_on_device;
        if (still_on_device && !out.error) out.error = std::make_error_code(std::errc::io_error);
        p = end;
    }
    c_.counters.failed_pages.fetch_add(out.failed - failed_before, std::memory_order_relaxed);
}

}  // namespace uhmm::migrate
