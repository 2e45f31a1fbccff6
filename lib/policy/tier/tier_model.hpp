// The tier policy's decision model: which host pages to demote to the device
// arena so that host-resident managed memory stays within `tier_hot`.
//
// Pure and deterministic: no threads, no kernel calls, no clock. The runtime
// feeds it what user space can see and executes what it returns:
//  - first touches and promotions (a userfaultfd fault on a NONE or DEVICE
//    page: the page was used at that tick, and is host-resident now);
//  - write scans (PAGEMAP_SCAN with PAGE_IS_WRITTEN over WP_ASYNC-protected
//    ranges, re-armed by PM_SCAN_WP_MATCHING): the pages written since the
//    previous scan;
//  - frees (the application discarded the page: MADV_DONTNEED, munmap).
// What it cannot see: reads of host-resident pages. A page that is only read
// looks idle until it is demoted and faults back; that fault, and how soon it
// came (the refault distance), is the model's only evidence about reads.
//
// The scheme (segmented LRU with refault detection, as Linux's workingset
// and 2Q do, with ARC's adaptive split, over the visible signals):
//  - grace:      pages that came home (promotion, first touch) less than
//                `grace` ticks ago, FIFO, at most `grace_share` × budget.
//                Demoted only when nothing else is left: they were just
//                used, and demoting them at once would turn every miss into
//                two migrations.
//  - probation:  host pages with one visible use, LRU by last visible use
//                (a write seen by a scan moves a page to the hot end).
//                Victims come from its cold end first.
//  - protected:  pages with evidence of reuse: written in a scan after the
//                one in which they came home, or refaulted within
//                `refault_window` × budget demotions of being demoted (a
//                page refaulting that soon would have been a hit with that
//                much more room). Its cold end overflows back into
//                probation, never straight to the device, so an unproven
//                page always goes first.
// The protected target moves as ARC's does: a proven refault of a page that
// was demoted unproven says probation was short of room (a new working set
// moving in), one of a page that had been protected says protected was
// (reads kept it hot where we could not see them); each step is weighed by
// how many such recent demotions there are of either kind. On a stationary
// skewed trace the target goes to the whole budget (frequency wins); when the
// hot set keeps moving it goes to zero (plain LRU over the visible uses).
//
// Memory: a node (56 bytes) per page the model knows, host or device (device
// pages keep theirs so that their refault distance can be measured when they
// come home), and one byte per demotion in the refault window. Steady-state
// operation allocates nothing: nodes are recycled through a free list and
// the page index grows by doubling. Every operation is O(1) amortized except
// on_scan (O(pages written)) and demotions (O(victims)).
#pragma once

#include <boost/intrusive/list.hpp>
#include <boost/intrusive/unordered_set.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

namespace uhmm::tier {

// A page's identity (e.g. its address >> 12) and a monotonic time in any unit
// (the runtime uses nanoseconds, the simulations use access numbers).
using PageId = std::uint64_t;
using Tick = std::uint64_t;

struct TierParams {
    // Ticks after a promotion or first touch during which the page is
    // demoted only if every other host page has gone already; and the
    // share of the budget that pages in grace may hold (beyond it, the
    // oldest leave grace early: a grace longer than the time the budget
    // takes to turn over would make the policy FIFO).
    Tick grace = 0;
    double grace_share = 0.25;
    // Share of the host budget that proven pages may hold (0..1); with
    // `adapt`, where that share starts.
    double protected_share = 0.75;
    // Move the protected share with the refaults, as ARC does.
    bool adapt = true;
    // A refault within this many demotions (× budget) proves a page hot
    // (1: as ARC's ghost lists, which remember as many pages as it caches).
    double refault_window = 1.0;
};

enum class Residency : std::uint8_t { unknown, host, device };

struct TierStats {
    std::uint64_t first_touches = 0;
    std::uint64_t promotions = 0;
    std::uint64_t demotions = 0;
    std::uint64_t refaults_proven = 0;   // promotions within the refault window
    std::uint64_t writes_proven = 0;     // pages proven by a scan's written bit
    std::uint64_t overflows = 0;         // protected → probation
    std::uint64_t refaults_probation = 0;  // proven refaults of pages never protected
    std::uint64_t refaults_protected = 0;  // proven refaults of pages that were protected
    std::uint64_t freed = 0;
};

class TierModel {
public:
    explicit TierModel(std::size_t hot_pages, TierParams params = {});
    TierModel(const TierModel&) = delete;
    TierModel& operator=(const TierModel&) = delete;

    // A NONE page was touched: host-resident and used at `t`.
    void on_first_touch(PageId p, Tick t);
    // A fault brought `p` home: host-resident and used at `t`.
    void on_promote(PageId p, Tick t);
    // The pages written since the previous scan (any order; pages the model
    // does not know as host-resident are ignored).
    void on_scan(std::span<const PageId> written, Tick t);
    // The application discarded `p`: it leaves the model.
    void on_freed(PageId p);
    // A demotion this model asked for did not happen: `p` is on the host
    // again, as an unproven page (not as a fresh use: nothing touched it).
    void on_demote_failed(PageId p, Tick t);

    // Appends to `out`, coldest first, the pages to demote now so that at
    // most hot_pages() stay on the host, marks them device-resident and
    // returns how many were appended.
    std::size_t demotions(Tick now, std::vector<PageId>& out);

    // Appends to `out` up to `n` host pages that demotions() would take
    // next once the host is over budget, coldest first (probation, then
    // protected; never pages in grace), changing nothing: the pages worth
    // watching for a write (a write seen by on_scan saves one). Returns how
    // many were appended.
    std::size_t candidates(std::size_t n, std::vector<PageId>& out) const;

    void set_hot_pages(std::size_t hot_pages);
    std::size_t hot_pages() const { return hot_pages_; }
    std::size_t host_pages() const { return grace_.size() + probation_.size() + protected_.size(); }
    std::size_t device_pages() const { return device_count_; }
    Residency where(PageId p) const;
    const TierStats& stats() const { return stats_; }
    const TierParams& params() const { return params_; }
    // How many proven pages the host holds at most now.
    std::size_t protected_target() const { return protected_cap(); }

private:
    enum class Place : std::uint8_t { free, grace, probation, protect, device };

    struct Node {
        boost::intrusive::list_member_hook<> link;              // grace / probation / protected / free
        boost::intrusive::unordered_set_member_hook<> by_page;  // the index
        PageId page = 0;
        Tick arrived = 0;            // when it last came home (promotion, first touch)
        std::uint64_t demoted_at = 0;  // demotions_seq_ when it last went to the device
        Place place = Place::free;
        bool proven = false;         // evidence of reuse while in grace
        bool was_protected = false;  // protected at some point since it came home
    };
    struct PageOf {
        using type = PageId;
        const PageId& operator()(const Node& n) const noexcept { return n.page; }
    };
    // Page numbers are often consecutive or strided by a power of two; mix
    // them before power-of-two buckets take the low bits.
    struct PageHash {
        std::size_t operator()(PageId p) const noexcept;
    };

    using List = boost::intrusive::list<
        Node, boost::intrusive::member_hook<Node, boost::intrusive::list_member_hook<>, &Node::link>,
        boost::intrusive::constant_time_size<true>>;
    using Index = boost::intrusive::unordered_set<
        Node,
        boost::intrusive::member_hook<Node, boost::intrusive::unordered_set_member_hook<>, &Node::by_page>,
        boost::intrusive::key_of_value<PageOf>, boost::intrusive::hash<PageHash>,
        boost::intrusive::power_2_buckets<true>, boost::intrusive::constant_time_size<true>>;

    const Node* find(PageId p) const;
    Node* find(PageId p);
    Node& insert(PageId p);
    List* list_of(Place place);
    void unlink(Node& n);
    void arrive(Node& n, Tick t);
    void protect(Node& n);
    void expire_grace(Tick now);
    void rebalance();
    std::size_t protected_cap() const;
    std::size_t grace_cap() const;
    void resize_window();
    bool forget_ghost(const Node& n);
    Tick advance(Tick t);

    std::size_t hot_pages_;
    TierParams params_;
    Tick now_ = 0;
    Tick last_scan_ = 0;
    double target_ = 0;  // protected pages at most
    // The last window_ demotions, by class (1: never protected, 2: had been
    // protected, 0: came home or freed since): ARC's ghost lists B1 and B2.
    std::size_t window_ = 0;
    std::vector<std::uint8_t> ghost_ring_;
    std::size_t ghosts_[3] = {};
    bool scanned_ = false;
    std::uint64_t demotions_seq_ = 0;
    std::size_t device_count_ = 0;
    TierStats stats_;

    // Declared before the lists and the index, destroyed after them.
    std::deque<Node> slab_;
    std::vector<Index::bucket_type> buckets_;
    List free_, grace_, probation_, protected_;
    Index index_;
};

}  // namespace uhmm::tier
