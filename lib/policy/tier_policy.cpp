// TierPolicy (see the header).
#include "policy/tier_policy.hpp"

#include <algorithm>

namespace uhmm::policy {

namespace {

constexpr std::size_t kPage = 4096;

tier::TierParams params() {
    tier::TierParams p;
    // A page that just came home is left alone for two rounds: it was just
    // used, and demoting it at once would turn every miss into two moves.
    p.grace = static_cast<tier::Tick>(std::chrono::nanoseconds(2 * TierPolicy::kPeriod).count());
    return p;
}

// Runs of consecutive pages in a sorted list: fn(index of the run's first, count).
template <class Fn>
void for_each_run(const std::vector<tier::PageId>& pages, Fn&& fn) {
    for (std::size_t i = 0; i < pages.size();) {
        std::size_t j = i + 1;
        while (j < pages.size() && pages[j] == pages[j - 1] + 1) ++j;
        fn(i, j - i);
        i = j;
    }
}

}  // namespace

TierPolicy::TierPolicy(Runtime& rt, const PolicyConfig& config)
    : rt_(rt), model_(std::max<std::size_t>(1, config.tier_hot / kPage), params()) {
    start("uhmm-tier", kPeriod);
}

tier::Tick TierPolicy::now() const {
    return static_cast<tier::Tick>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count());
}

void TierPolicy::observe(const RangeInfo& r, std::vector<PageState>& last, tier::Tick t) {
    const std::size_t pages = r.len / kPage;
    last.resize(pages, PageState::none);
    for (std::size_t i = 0; i < pages; ++i) {
        const PageState was = last[i], is = states_[i];
        if (is == PageState::migrating || is == was) continue;   // in flight: judged next round
        const tier::PageId id = r.start / kPage + i;
        if (is == PageState::host) {
            if (was == PageState::device) model_.on_promote(id, t);
            else model_.on_first_touch(id, t);
        } else if (is == PageState::none) {
            model_.on_freed(id);
        } else if (model_.where(id) == tier::Residency::host) {
            // Moved to the device by someone else (a request): the model
            // forgets it, and its next touch counts as a first one.
            model_.on_freed(id);
        }
        last[i] = is;
    }
}

Policy::Moved TierPolicy::demote(tier::Tick t) {
    victims_.clear();
    model_.demotions(t, victims_);
    std::sort(victims_.begin(), victims_.end());
    Moved moved;
    const Runtime::MigrateOptions background{nullptr, false};
    for_each_run(victims_, [&](std::size_t i, std::size_t count) {
        auto* at = reinterpret_cast<void*>(victims_[i] * kPage);
        const std::size_t len = count * kPage;
        auto res = rt_.migrate(at, len, Target::device, background);
        if (res && res->migrated) {
            moved.pages += res->migrated;
            ++moved.calls;
        }
        // What did not move (a busy device, a page in flight, memory gone)
        // is on the host still: give it back to the model as such.
        states_.resize(count);
        const bool known = !rt_.residency(at, len, states_);
        for (std::size_t k = 0; k < count; ++k) {
            const tier::PageId page = victims_[i + k];
            const PageState s = known ? states_[k] : PageState::none;
            if (s == PageState::host) model_.on_demote_failed(page, t);
            else if (s == PageState::none) model_.on_freed(page);
            // Keep the last round's view in step, so this is no promotion.
            const std::uintptr_t addr = page * kPage;
            auto it = last_.upper_bound(addr);
            if (it != last_.begin()) {
                --it;
                const std::size_t idx = (addr - it->first) / kPage;
                if (idx < it->second.size()) it->second[idx] = s;
            }
        }
    });
    return moved;
}

void TierPolicy::collect_writes(tier::Tick t) {
    written_.clear();
    for_each_run(watched_, [&](std::size_t i, std::size_t count) {
        const tier::PageId first = watched_[i];
        auto take = [&](tier::PageId p, std::size_t n) {
            bits_.resize(n);
            if (rt_.take_writes(reinterpret_cast<void*>(p * kPage), n * kPage, bits_)) return false;
            for (std::size_t k = 0; k < n; ++k)
                if (bits_[k]) written_.push_back(p + k);
            return true;
        };
        // Part of the run may have been unmapped since: then page by page.
        if (!take(first, count))
            for (std::size_t k = 0; k < count; ++k) (void)take(first + k, 1);
    });
    // Every round, written or not: the model counts a write as a second use
    // only for pages that came home before its previous scan.
    model_.on_scan(written_, t);
}

void TierPolicy::watch_next(std::size_t demoted) {
    watched_.clear();
    model_.candidates(std::clamp(2 * demoted, kMinWatch, kMaxWatch), watched_);
    std::sort(watched_.begin(), watched_.end());
    for_each_run(watched_, [&](std::size_t i, std::size_t count) {
        const tier::PageId first = watched_[i];
        if (!rt_.watch_writes(reinterpret_cast<void*>(first * kPage), count * kPage))
            for (std::size_t k = 0; k < count; ++k) (void)rt_.watch_writes(reinterpret_cast<void*>((first + k) * kPage), kPage);
    });
}

void TierPolicy::apply_advice(const RangeInfo& r) {
    const std::size_t pages = r.len / kPage;
    advice_.resize(pages);
    if (rt_.advice(reinterpret_cast<void*>(r.start), r.len, advice_)) return;   // gone meanwhile: no advice
    constexpr std::uint8_t kept_home = advice_bits::prefer_host | advice_bits::read_mostly;
    for (std::size_t i = 0; i < pages; ++i) {
        const std::uint8_t a = advice_[i];
        if (!(a & (kept_home | advice_bits::prefer_device))) continue;
        if ((a & advice_bits::prefer_device) && states_[i] == PageState::host) preferred_.push_back(r.start / kPage + i);
        states_[i] = PageState::none;
    }
}

Policy::Moved TierPolicy::demote_preferred() {
    Moved moved;
    const Runtime::MigrateOptions background{nullptr, false};
    for_each_run(preferred_, [&](std::size_t i, std::size_t count) {
        auto res = rt_.migrate(reinterpret_cast<void*>(preferred_[i] * kPage), count * kPage, Target::device, background);
        if (res && res->migrated) {
            moved.pages += res->migrated;
            ++moved.calls;
        }
    });
    return moved;
}

Policy::Moved TierPolicy::step() {
    const tier::Tick t = now();
    std::map<std::uintptr_t, std::vector<PageState>> seen;
    preferred_.clear();
    for (const RangeInfo& r : rt_.ranges()) {
        states_.resize(r.len / kPage);
        if (rt_.residency(reinterpret_cast<void*>(r.start), r.len, states_)) continue;   // gone meanwhile
        apply_advice(r);
        auto it = last_.find(r.start);
        std::vector<PageState> last = it != last_.end() ? std::move(it->second) : std::vector<PageState>{};
        observe(r, last, t);
        seen.emplace(r.start, std::move(last));
    }
    // Ranges that went away: their pages were freed.
    for (const auto& [start, last] : last_) {
        if (seen.count(start)) continue;
        for (std::size_t i = 0; i < last.size(); ++i)
            if (last[i] == PageState::host || last[i] == PageState::device) model_.on_freed(start / kPage + i);
    }
    last_ = std::move(seen);
    collect_writes(t);
    Moved moved = demote(t);
    watch_next(victims_.size());
    const Moved preferred = demote_preferred();
    moved.pages += preferred.pages;
    moved.calls += preferred.calls;
    return moved;
}

}  // namespace uhmm::policy
