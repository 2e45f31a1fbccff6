#include "policy/tier/tier_sim.hpp"

#include <boost/intrusive/list.hpp>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <random>
#include <stdexcept>

namespace uhmm::tier::sim {

namespace {

enum : std::uint8_t { kNone = 0, kHost = 1, kDevice = 2 };

constexpr std::uint32_t page_of(std::uint32_t op) { return op & ~Trace::kWrite; }
constexpr bool is_write(std::uint32_t op) { return (op & Trace::kWrite) != 0; }

// [0, 1) from the generator's raw bits (std::uniform_real_distribution is
// implementation-defined; this is not).
double unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

struct Counter {
    Result r;
    std::uint8_t* state;
    // Records the access; true when it was a miss.
    bool access(std::uint32_t p) {
        ++r.accesses;
        switch (state[p]) {
        case kHost: ++r.hits; return false;
        case kNone: ++r.first_touches; break;
        default: ++r.promotions; break;
        }
        state[p] = kHost;
        return true;
    }
    void demote(std::uint32_t p) {
        state[p] = kDevice;
        ++r.demotions;
    }
};

}  // namespace

Trace zipf_trace(const ZipfSpec& spec) {
    if (spec.pages == 0 || spec.pages >= Trace::kWrite)
        throw std::invalid_argument("zipf_trace: pages must be in 1 .. 2^31-1");
    if (spec.accesses >= std::numeric_limits<std::uint32_t>::max())
        throw std::invalid_argument("zipf_trace: accesses must be below 2^32-1");
    if (!(spec.skew >= 0) || !(spec.write_share >= 0 && spec.write_share <= 1))
        throw std::invalid_argument("zipf_trace: skew >= 0 and write_share in [0, 1]");

    std::mt19937_64 rng(spec.seed);
    std::vector<double> cdf(spec.pages);
    double sum = 0;
    for (std::uint32_t k = 0; k < spec.pages; ++k) cdf[k] = sum += std::pow(static_cast<double>(k + 1), -spec.skew);

    std::vector<std::uint32_t> page_of_rank(spec.pages);
    for (std::uint32_t k = 0; k < spec.pages; ++k) page_of_rank[k] = k;
    auto shuffle = [&] {
        for (std::uint32_t k = spec.pages - 1; k > 0; --k) std::swap(page_of_rank[k], page_of_rank[rng() % (k + 1)]);
    };
    shuffle();

    Trace t;
    t.pages = spec.pages;
    t.ops.reserve(spec.accesses);
    for (std::uint64_t i = 0; i < spec.accesses; ++i) {
        if (spec.phase && i && i % spec.phase == 0) shuffle();
        const double u = unit(rng) * sum;
        const auto rank = std::min<std::size_t>(
            static_cast<std::size_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin()), spec.pages - 1);
        const bool write = unit(rng) < spec.write_share;
        t.ops.push_back(page_of_rank[rank] | (write ? Trace::kWrite : 0));
    }
    return t;
}

Result run_tier(const Trace& trace, std::size_t hot, std::uint64_t scan_every, const TierParams& params,
                TierStats* stats, std::size_t* protected_target) {
    TierModel model(hot, params);
    std::vector<std::uint8_t> state(trace.pages, kNone);
    std::vector<std::uint8_t> dirty(trace.pages, 0);  // the kernel's written bit
    std::vector<std::uint32_t> pending;               // pages whose bit went 0 → 1 (may repeat)
    std::vector<PageId> written, victims;
    Counter c{{}, state.data()};
    scan_every = std::max<std::uint64_t>(scan_every, 1);

    for (std::uint64_t i = 0; i < trace.ops.size(); ++i) {
        const std::uint32_t op = trace.ops[i];
        const std::uint32_t p = page_of(op);
        const std::uint8_t before = state[p];
        if (c.access(p)) {
            if (before == kNone) model.on_first_touch(p, i);
            else model.on_promote(p, i);
            victims.clear();
            model.demotions(i, victims);
            for (PageId v : victims) {
                c.demote(static_cast<std::uint32_t>(v));
                dirty[v] = 0;  // write-protected on the way out, not mapped while away
            }
        }
        // The access itself (after the fault, if any) sets the written bit;
        // unless the page went straight back to the device.
        if (is_write(op) && state[p] == kHost && !dirty[p]) {
            dirty[p] = 1;
            pending.push_back(p);
        }
        if (model.host_pages() > hot) ++c.r.over_budget_steps;
        if ((i + 1) % scan_every == 0) {
            written.clear();
            for (std::uint32_t q : pending)
                if (dirty[q]) {
                    dirty[q] = 0;
                    written.push_back(q);
                }
            pending.clear();
            std::sort(written.begin(), written.end());
            model.on_scan(written, i);
        }
    }
    if (stats) *stats = model.stats();
    if (protected_target) *protected_target = model.protected_target();
    return c.r;
}

Result run_fifo(const Trace& trace, std::size_t hot) {
    std::vector<std::uint8_t> state(trace.pages, kNone);
    std::deque<std::uint32_t> arrivals;
    Counter c{{}, state.data()};
    for (std::uint32_t op : trace.ops) {
        const std::uint32_t p = page_of(op);
        if (!c.access(p)) continue;
        arrivals.push_back(p);
        while (arrivals.size() > hot) {
            c.demote(arrivals.front());
            arrivals.pop_front();
        }
    }
    return c.r;
}

Result run_lru(const Trace& trace, std::size_t hot) {
    struct Node : boost::intrusive::list_base_hook<> {};
    using List = boost::intrusive::list<Node, boost::intrusive::constant_time_size<true>>;
    std::vector<Node> nodes(trace.pages);
    std::vector<std::uint8_t> state(trace.pages, kNone);
    Counter c{{}, state.data()};
    List lru;  // cold end first; declared after `nodes`, so unlinked before they go
    for (std::uint32_t op : trace.ops) {
        const std::uint32_t p = page_of(op);
        if (!c.access(p)) lru.erase(lru.iterator_to(nodes[p]));
        lru.push_back(nodes[p]);
        while (lru.size() > hot) {
            const auto v = static_cast<std::uint32_t>(&lru.front() - nodes.data());
            lru.pop_front();
            c.demote(v);
        }
    }
    lru.clear();
    return c.r;
}

Result run_opt(const Trace& trace, std::size_t hot) {
    constexpr std::uint32_t kNever = std::numeric_limits<std::uint32_t>::max();
    if (trace.ops.size() >= kNever) throw std::invalid_argument("run_opt: trace too long");
    // next[i]: the position of the next access to the page of access i.
    std::vector<std::uint32_t> next(trace.ops.size());
    {
        std::vector<std::uint32_t> seen(trace.pages, kNever);
        for (std::size_t i = trace.ops.size(); i-- > 0;) {
            const std::uint32_t p = page_of(trace.ops[i]);
            next[i] = seen[p];
            seen[p] = static_cast<std::uint32_t>(i);
        }
    }
    std::vector<std::uint8_t> state(trace.pages, kNone);
    std::vector<std::uint32_t> next_of(trace.pages, kNever);
    // Max-heap of (next use << 32 | page); entries go stale when the page is
    // used again or leaves, and are skipped when they reach the top.
    std::vector<std::uint64_t> heap;
    std::size_t host = 0;
    Counter c{{}, state.data()};
    for (std::size_t i = 0; i < trace.ops.size(); ++i) {
        const std::uint32_t p = page_of(trace.ops[i]);
        if (c.access(p)) ++host;
        next_of[p] = next[i];
        heap.push_back(std::uint64_t{next[i]} << 32 | p);
        std::push_heap(heap.begin(), heap.end());
        while (host > hot) {
            std::pop_heap(heap.begin(), heap.end());
            const std::uint64_t top = heap.back();
            heap.pop_back();
            const auto v = static_cast<std::uint32_t>(top);
            if (state[v] != kHost || next_of[v] != static_cast<std::uint32_t>(top >> 32)) continue;
            c.demote(v);
            --host;
        }
        if (heap.size() > 4 * (hot + 1) + 1024) {
            // Drop the stale entries so the heap stays near the host set's size.
            std::erase_if(heap, [&](std::uint64_t e) {
                const auto v = static_cast<std::uint32_t>(e);
                return state[v] != kHost || next_of[v] != static_cast<std::uint32_t>(e >> 32);
            });
            std::make_heap(heap.begin(), heap.end());
        }
    }
    return c.r;
}

}  // namespace uhmm::tier::sim
