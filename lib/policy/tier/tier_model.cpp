#include "policy/tier/tier_model.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

namespace uhmm::tier {

namespace {

constexpr std::size_t kInitialBuckets = 1024;

double clamp01(double v) { return std::isnan(v) ? 0.0 : std::clamp(v, 0.0, 1.0); }

}  // namespace

std::size_t TierModel::PageHash::operator()(PageId p) const noexcept {
    // splitmix64's finalizer: every input bit reaches the low bits.
    p ^= p >> 30;
    p *= 0xbf58476d1ce4e5b9ULL;
    p ^= p >> 27;
    p *= 0x94d049bb133111ebULL;
    p ^= p >> 31;
    return static_cast<std::size_t>(p);
}

TierModel::TierModel(std::size_t hot_pages, TierParams params)
    : hot_pages_(hot_pages),
      params_(params),
      buckets_(kInitialBuckets),
      index_(Index::bucket_traits(buckets_.data(), buckets_.size())) {
    params_.protected_share = clamp01(params_.protected_share);
    params_.grace_share = clamp01(params_.grace_share);
    params_.refault_window = std::isnan(params_.refault_window) ? 0.0 : std::max(params_.refault_window, 0.0);
    target_ = params_.protected_share * static_cast<double>(hot_pages_);
    resize_window();
}

// The refault window in demotions; its ghost record starts empty.
void TierModel::resize_window() {
    window_ = static_cast<std::size_t>(params_.refault_window * static_cast<double>(hot_pages_));
    ghost_ring_.assign(window_, 0);
    ghosts_[0] = ghosts_[1] = ghosts_[2] = 0;
}

// A device page leaves the ghost record (it came home or was freed); true
// when it was demoted less than window_ demotions ago.
bool TierModel::forget_ghost(const Node& n) {
    if (demotions_seq_ - n.demoted_at >= window_) return false;
    std::uint8_t& cls = ghost_ring_[n.demoted_at % window_];
    if (cls) --ghosts_[cls];
    cls = 0;
    return true;
}

// Ticks only move forward: an event stamped earlier than one already seen
// (two threads reporting out of order) counts as happening now.
Tick TierModel::advance(Tick t) {
    now_ = std::max(now_, t);
    return now_;
}

const TierModel::Node* TierModel::find(PageId p) const {
    auto it = index_.find(p);
    return it == index_.end() ? nullptr : &*it;
}

TierModel::Node* TierModel::find(PageId p) {
    return const_cast<Node*>(std::as_const(*this).find(p));
}

TierModel::Node& TierModel::insert(PageId p) {
    Node* n;
    if (!free_.empty()) {
        n = &free_.front();
        free_.pop_front();
    } else {
        n = &slab_.emplace_back();
    }
    n->page = p;
    n->arrived = 0;
    n->demoted_at = 0;
    n->place = Place::free;
    n->proven = false;
    n->was_protected = false;
    if (index_.size() >= buckets_.size()) {
        std::vector<Index::bucket_type> grown(buckets_.size() * 2);
        index_.rehash(Index::bucket_traits(grown.data(), grown.size()));
        buckets_.swap(grown);
    }
    index_.insert(*n);
    return *n;
}

TierModel::List* TierModel::list_of(Place place) {
    switch (place) {
    case Place::grace: return &grace_;
    case Place::probation: return &probation_;
    case Place::protect: return &protected_;
    case Place::free: return &free_;
    case Place::device: return nullptr;
    }
    return nullptr;
}

// Takes a host node off its list; device nodes are on none.
void TierModel::unlink(Node& n) {
    if (List* l = list_of(n.place); l && n.link.is_linked()) l->erase(l->iterator_to(n));
}

std::size_t TierModel::protected_cap() const { return static_cast<std::size_t>(target_); }

std::size_t TierModel::grace_cap() const {
    return static_cast<std::size_t>(params_.grace_share * static_cast<double>(hot_pages_));
}

// Came home and was used at t: a grace period starts.
void TierModel::arrive(Node& n, Tick t) {
    n.arrived = t;
    n.place = Place::grace;
    n.was_protected = false;
    grace_.push_back(n);
}

// To the hot end of protected (the caller has taken it off its list).
void TierModel::protect(Node& n) {
    n.place = Place::protect;
    n.was_protected = true;
    protected_.push_back(n);
}

void TierModel::on_first_touch(PageId p, Tick t) {
    t = advance(t);
    Node* n = find(p);
    if (n) {
        // Known already (the runtime saw it before the model did, or a page
        // freed and touched again raced with on_freed): a use like a fault.
        on_promote(p, t);
        return;
    }
    ++stats_.first_touches;
    arrive(insert(p), t);
}

void TierModel::on_promote(PageId p, Tick t) {
    t = advance(t);
    Node* n = find(p);
    if (!n) n = &insert(p);
    ++stats_.promotions;
    if (n->place == Place::device) {
        // The fault is the only sign of the reads we could not see. How many
        // demotions happened since this page went (its refault distance) says
        // how much more room would have made this fault a hit: within the
        // window, the page is part of the working set and is protected.
        --device_count_;
        const std::size_t b1 = ghosts_[1], b2 = ghosts_[2];
        n->proven = forget_ghost(*n);
        if (n->proven) {
            ++stats_.refaults_proven;
            // Which segment lost it says which one is short of room, as hits
            // in ARC's ghost lists do: a page demoted while still unproven →
            // probation is (a working set is moving in); one that had been
            // protected → protected is (reads kept it hot, unseen). Steps
            // are weighed by the ghosts' numbers, so the split follows the
            // hit rate per ghost page, not the raw counts.
            const double hot = static_cast<double>(hot_pages_);
            if (n->was_protected) {
                ++stats_.refaults_protected;
                if (params_.adapt)
                    target_ = std::min(target_ + std::max(1.0, static_cast<double>(b1) / static_cast<double>(b2)), hot);
            } else {
                ++stats_.refaults_probation;
                if (params_.adapt)
                    target_ = std::max(target_ - std::max(1.0, static_cast<double>(b2) / static_cast<double>(b1)), 0.0);
            }
        }
    } else {
        // A host page reported again: a use, its standing unchanged.
        n->proven = n->place == Place::protect || (n->place == Place::grace && n->proven);
        unlink(*n);
    }
    arrive(*n, t);
}

void TierModel::on_scan(std::span<const PageId> written, Tick t) {
    t = advance(t);
    expire_grace(t);
    for (PageId p : written) {
        Node* n = find(p);
        if (!n) continue;
        // The write that faulted a page home sets its written bit too, so a
        // write counts as a second use only when the page came home before
        // the previous scan (a scan at tick t follows the events at tick t).
        const bool reuse = scanned_ && n->arrived <= last_scan_;
        switch (n->place) {
        case Place::grace:
            if (reuse && !n->proven) {
                n->proven = true;
                ++stats_.writes_proven;
            }
            break;
        case Place::probation:
            probation_.erase(probation_.iterator_to(*n));
            if (reuse) {
                protect(*n);
                ++stats_.writes_proven;
            } else {
                probation_.push_back(*n);
            }
            break;
        case Place::protect:
            protected_.erase(protected_.iterator_to(*n));
            protected_.push_back(*n);
            break;
        case Place::device:
        case Place::free:
            break;  // not on the host: a stale report
        }
    }
    last_scan_ = t;
    scanned_ = true;
    rebalance();
}

// Grace is over: the page joins the segment its evidence earned.
void TierModel::expire_grace(Tick now) {
    const std::size_t cap = grace_cap();
    while (!grace_.empty() && (now - grace_.front().arrived >= params_.grace || grace_.size() > cap)) {
        Node& n = grace_.front();
        grace_.pop_front();
        if (n.proven) {
            protect(n);
        } else {
            n.place = Place::probation;
            probation_.push_back(n);
        }
        n.proven = false;
    }
    rebalance();
}

// Protected pages beyond the cap go back on probation (its hot end): a page
// whose reuse we have not seen for a while must lose to nothing proven, but
// still outlive every page that never showed a reuse.
void TierModel::rebalance() {
    const std::size_t cap = protected_cap();
    while (protected_.size() > cap) {
        Node& n = protected_.front();
        protected_.pop_front();
        n.place = Place::probation;
        probation_.push_back(n);
        ++stats_.overflows;
    }
}

std::size_t TierModel::candidates(std::size_t n, std::vector<PageId>& out) const {
    std::size_t count = 0;
    for (const List* from : {&probation_, &protected_})
        for (auto it = from->begin(); it != from->end() && count < n; ++it, ++count) out.push_back(it->page);
    return count;
}

std::size_t TierModel::demotions(Tick now, std::vector<PageId>& out) {
    now = advance(now);
    expire_grace(now);
    std::size_t count = 0;
    while (host_pages() > hot_pages_) {
        // Coldest first: unproven pages by last visible use, then proven
        // ones the same way, then (nothing else left) pages still in grace.
        List& from = !probation_.empty() ? probation_ : !protected_.empty() ? protected_ : grace_;
        Node& n = from.front();
        from.pop_front();
        n.place = Place::device;
        n.proven = false;
        n.demoted_at = ++demotions_seq_;
        if (window_) {
            std::uint8_t& cls = ghost_ring_[n.demoted_at % window_];
            if (cls) --ghosts_[cls];  // the demotion window_ ago leaves the record
            cls = n.was_protected ? 2 : 1;
            ++ghosts_[cls];
        }
        ++device_count_;
        out.push_back(n.page);
        ++count;
    }
    stats_.demotions += count;
    return count;
}

void TierModel::on_demote_failed(PageId p, Tick t) {
    advance(t);
    Node* n = find(p);
    if (!n || n->place != Place::device) return;
    --device_count_;
    n->place = Place::probation;
    probation_.push_back(*n);
}

void TierModel::on_freed(PageId p) {
    Node* n = find(p);
    if (!n) return;
    if (n->place == Place::device) {
        forget_ghost(*n);
        --device_count_;
    } else {
        unlink(*n);
    }
    index_.erase(index_.iterator_to(*n));
    n->place = Place::free;
    free_.push_back(*n);
    ++stats_.freed;
}

void TierModel::set_hot_pages(std::size_t hot_pages) {
    if (hot_pages_) target_ = target_ * static_cast<double>(hot_pages) / static_cast<double>(hot_pages_);
    else target_ = params_.protected_share * static_cast<double>(hot_pages);
    hot_pages_ = hot_pages;
    resize_window();
    rebalance();
}

Residency TierModel::where(PageId p) const {
    const Node* n = find(p);
    if (!n) return Residency::unknown;
    return n->place == Place::device ? Residency::device : Residency::host;
}

}  // namespace uhmm::tier
