// Runtime::advise / advice: cudaMemAdvise's three kinds of advice (see
// include/uhmm/advice.hpp), kept as bits in each page's entry.
//
// Where each is honoured: read_mostly in range_fault (a device's read makes
// and is given a replica: Impl::replicate) and in prefetch(); a CPU write
// drops the replica in the fault path (fault_handler.cpp). preferred_location
// in the fault path (a device-preferring page comes home alone) and in the
// policies (lib/policy). accessed_by here (the device maps the range at
// once), in migrate() (it maps it again once pages moved) and in range_fault
// (device pages of any owner reported in place to that device).
#include <algorithm>

#include "base/log.hpp"
#include "runtime/page_walk.hpp"
#include "runtime/runtime_impl.hpp"

namespace uhmm {

using space::kPage;

namespace {

std::error_code refuse(std::string* why, int err, std::string text) {
    if (why) *why = std::move(text);
    return errno_code(err);
}

// The advice bits a page shows to advice(): its own, and whether it has a
// replica ready.
std::uint8_t shown(const space::PageEntry& e) {
    std::uint8_t bits = static_cast<std::uint8_t>(e.advice);
    if (e.state == PageState::host && (e.flags & space::kReplica) && !(e.flags & space::kReplicaFilling))
        bits |= advice_bits::replicated;
    return bits;
}

// Cut [start, end) out of `device`'s intervals.
void cut_out(std::vector<Runtime::Impl::AccessedBy>& list, const mirror::Notifier* device, std::uintptr_t start,
             std::uintptr_t end) {
    std::vector<Runtime::Impl::AccessedBy> kept;
    for (const auto& x : list) {
        if (x.device != device || x.end <= start || end <= x.start) {
            kept.push_back(x);
            continue;
        }
        if (x.start < start) kept.push_back({x.start, start, x.device});
        if (end < x.end) kept.push_back({end, x.end, x.device});
    }
    list = std::move(kept);
}

// A page of [start, end) is accessed-by while some device's interval covers it.
void mark_accessed_by(Runtime::Impl& rt, std::uintptr_t start, std::uintptr_t end) {
    const auto still = [&] {
        std::lock_guard lock(rt.accessed_by_lock);
        return rt.accessed_by;
    }();
    (void)for_each_block(rt.space, reinterpret_cast<void*>(start), end - start,
                         [&](space::ManagedRange& r, std::size_t first, std::size_t last) {
                             std::lock_guard lock(r.lock_for(first));
                             for (std::size_t p = first; p < last; ++p) {
                                 const std::uintptr_t at = r.address_of(p);
                                 const bool covered = std::any_of(still.begin(), still.end(), [&](const auto& x) {
                                     return x.start <= at && at < x.end;
                                 });
                                 auto& e = r.entry(p);
                                 e.advice = covered ? (e.advice | space::kAdviseAccessedBy)
                                                    : (e.advice & ~space::kAdviseAccessedBy);
                             }
                         });
}

}  // namespace

std::vector<std::pair<std::uintptr_t, std::uintptr_t>> Runtime::Impl::in_place_for(const mirror::Notifier* device,
                                                                                   std::uintptr_t start,
                                                                                   std::uintptr_t end) const {
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> out;
    if (!device) return out;
    std::lock_guard lock(accessed_by_lock);
    for (const auto& a : accessed_by)
        if (a.device == device && a.start < end && start < a.end)
            out.emplace_back(std::max(a.start, start), std::min(a.end, end));
    return out;
}

void Runtime::Impl::repopulate(std::uintptr_t start, std::uintptr_t end) {
    std::vector<AccessedBy> todo;
    {
        std::lock_guard lock(accessed_by_lock);
        for (const auto& a : accessed_by)
            if (a.start < end && start < a.end) todo.push_back({std::max(a.start, start), std::min(a.end, end), a.device});
    }
    for (const auto& a : todo) {
        const bool alive = notifiers.with_inserted(a.device, [&](mirror::Notifier& n) {
            if (auto ec = n.populate(a.start, a.end))
                log::get().debug("accessed_by {:#x}-{:#x}: the device could not map it again: {}", a.start, a.end,
                                 ec.message());
        });
        if (alive) continue;
        // The device went away without unsetting its advice: forget it.
        std::lock_guard lock(accessed_by_lock);
        std::erase_if(accessed_by, [&](const AccessedBy& x) { return x.device == a.device; });
    }
}

void Runtime::Impl::replicate(std::uintptr_t start, std::uintptr_t end, MigrateResult& out) {
    std::shared_lock migrations(migration_lock);
    for (std::uintptr_t at = start; at < end;) {
        auto r = space.find(at);
        if (!r) {
            const std::size_t rest = (end - at) / kPage;
            out.requested += rest;
            out.failed += rest;
            if (!out.error) out.error = errno_code(EFAULT);
            return;
        }
        const std::uintptr_t stop = std::min(end, r->end());
        migration->replicate(*r, r->index_of(at), (stop - at) / kPage, out);
        at = stop;
    }
}

std::error_code Runtime::advise(const void* addr, std::size_t len, Advice advice, AdviceTarget target,
                                std::string* why) {
    Impl& rt = *impl_;
    if (rt.forked_child.load(std::memory_order_acquire))
        return refuse(why, ECHILD, "advise: this is a fork()ed child's copy of the runtime");
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    if (len == 0 || a + len < a || a + len > (std::uintptr_t{1} << 57))
        return refuse(why, EINVAL, "advise: the length is zero or runs past the address space");
    if (static_cast<unsigned>(advice) > static_cast<unsigned>(Advice::unset_accessed_by))
        return refuse(why, EINVAL, "advise: unknown advice " + std::to_string(static_cast<unsigned>(advice)));
    if (advice == Advice::set_preferred_location && target.location != Target::host &&
        target.location != Target::device)
        return refuse(why, EINVAL,
                      "advise: unknown location " + std::to_string(static_cast<unsigned>(target.location)));
    const std::uintptr_t start = a & ~(std::uintptr_t{kPage} - 1);
    const std::uintptr_t end = (a + len + kPage - 1) & ~(std::uintptr_t{kPage} - 1);
    std::lock_guard serial(rt.advice_lock);
    if (!all_managed(rt.space, reinterpret_cast<void*>(start), end - start))
        return refuse(why, EFAULT, "advise: the range is not all managed memory");

    // Pages with any of `bits` set: for the contradiction checks.
    auto any_with = [&](std::uint8_t bits) {
        bool found = false;
        (void)for_each_block(rt.space, reinterpret_cast<void*>(start), end - start,
                             [&](space::ManagedRange& r, std::size_t first, std::size_t last) {
                                 std::lock_guard lock(r.lock_for(first));
                                 for (std::size_t p = first; p < last && !found; ++p) found = r.entry(p).advice & bits;
                             });
        return found;
    };
    // Set and clear bits on every page; fn(entry) runs under the block lock too.
    auto apply = [&](std::uint8_t set, std::uint8_t clear, auto&& fn) {
        (void)for_each_block(rt.space, reinterpret_cast<void*>(start), end - start,
                             [&](space::ManagedRange& r, std::size_t first, std::size_t last) {
                                 std::lock_guard lock(r.lock_for(first));
                                 for (std::size_t p = first; p < last; ++p) {
                                     auto& e = r.entry(p);
                                     e.advice = static_cast<std::uint8_t>((e.advice & ~clear) | set) & 0x3F;
                                     fn(e);
                                 }
                             });
    };
    auto nothing = [](space::PageEntry&) {};

    switch (advice) {
        case Advice::set_read_mostly:
            if (any_with(space::kAdvisePreferDevice))
                return refuse(why, EINVAL,
                              "advise: read_mostly contradicts preferred_location=device on this range "
                              "(read-mostly pages stay on the host); unset that first");
            apply(space::kAdviseReadMostly, 0, nothing);
            return {};
        case Advice::unset_read_mostly: {
            bool dropped = false;
            apply(0, space::kAdviseReadMostly,
                  [&](space::PageEntry& e) { dropped |= rt.migration->drop_replica_locked(e); });
            // Devices holding the replicas let go of them (their pages stay
            // protected until a write lifts it: one fault, no harm).
            if (dropped) (void)rt.notifiers.invalidate({start, end, mirror::Event::migrate, true, nullptr});
            return {};
        }
        case Advice::set_preferred_location:
            if (target.location == Target::device) {
                if (any_with(space::kAdviseReadMostly))
                    return refuse(why, EINVAL,
                                  "advise: preferred_location=device contradicts read_mostly on this range "
                                  "(read-mostly pages stay on the host); unset that first");
                apply(space::kAdvisePreferDevice, space::kAdvisePreferHost, nothing);
            } else {
                apply(space::kAdvisePreferHost, space::kAdvisePreferDevice, nothing);
            }
            return {};
        case Advice::unset_preferred_location:
            apply(0, space::kAdvisePreferHost | space::kAdvisePreferDevice, nothing);
            return {};
        case Advice::set_accessed_by: {
            mirror::Notifier* device = target.device;
            if (!device) return refuse(why, EINVAL, "advise: accessed_by needs a device");
            bool covers = false;
            const bool inserted = rt.notifiers.with_inserted(
                device, [&](mirror::Notifier& n) { covers = n.start() <= start && end <= n.end(); });
            if (!inserted || !covers)
                return refuse(why, EINVAL,
                              "advise: accessed_by's device must be a notifier in this runtime's registry "
                              "that mirrors the whole range");
            // The device's intervals stay disjoint (advice given again must not
            // map the pages twice per migration): [start, end) replaces what
            // it overlaps. Its intervals as they were, to undo.
            std::vector<Impl::AccessedBy> before;
            {
                std::lock_guard lock(rt.accessed_by_lock);
                for (const auto& x : rt.accessed_by)
                    if (x.device == device) before.push_back(x);
                cut_out(rt.accessed_by, device, start, end);
                rt.accessed_by.push_back({start, end, device});
            }
            apply(space::kAdviseAccessedBy, 0, nothing);
            std::error_code mapped;
            (void)rt.notifiers.with_inserted(device, [&](mirror::Notifier& n) { mapped = n.populate(start, end); });
            if (!mapped) return {};
            // The device cannot map on advice: its intervals as they were
            // (what it was advised before stays), say why.
            {
                std::lock_guard lock(rt.accessed_by_lock);
                std::erase_if(rt.accessed_by, [&](const Impl::AccessedBy& x) { return x.device == device; });
                rt.accessed_by.insert(rt.accessed_by.end(), before.begin(), before.end());
            }
            mark_accessed_by(rt, start, end);
            return refuse(why, mapped == std::errc::not_supported ? ENOTSUP : mapped.value(),
                          "advise: accessed_by: this device cannot map the pages on advice (its "
                          "Notifier::populate says: " + mapped.message() + ")");
        }
        case Advice::unset_accessed_by: {
            if (!target.device) return refuse(why, EINVAL, "advise: accessed_by needs a device");
            {
                std::lock_guard lock(rt.accessed_by_lock);
                cut_out(rt.accessed_by, target.device, start, end);
            }
            mark_accessed_by(rt, start, end);
            return {};
        }
    }
    return refuse(why, EINVAL, "advise: unknown advice");
}

std::error_code Runtime::advice(const void* addr, std::size_t len, std::span<std::uint8_t> out) const {
    const auto start = reinterpret_cast<std::uintptr_t>(addr) & ~(std::uintptr_t{kPage} - 1);
    const auto end = reinterpret_cast<std::uintptr_t>(addr) + len;
    if (out.size() < (end - start + kPage - 1) / kPage) return errno_code(EINVAL);
    return for_each_block(impl_->space, addr, len, [&](space::ManagedRange& r, std::size_t first, std::size_t last) {
        std::lock_guard lock(r.lock_for(first));
        for (std::size_t p = first; p < last; ++p) out[(r.address_of(p) - start) / kPage] = shown(r.entry(p));
    });
}

}  // namespace uhmm
