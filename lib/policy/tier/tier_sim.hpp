// Trace-driven simulation of host-page placement under a budget, to judge the
// TierModel against what is possible (bench/policy, tests/policy).
//
// A trace is a sequence of page accesses (reads and writes). Every policy
// runs the same rules: an access finds its page host-resident (a hit) or not
// (a first touch or a fault from the device: a miss, after which the page is
// host-resident), and after every access at most `hot` pages stay on the host.
//  - run_tier: the TierModel, told only what user space sees: first touches,
//    promotions, and every `scan_every` accesses the pages written since the
//    previous scan (in page order, as PAGEMAP_SCAN returns them). Reads of
//    host pages are not reported. Ticks are access numbers.
//  - run_fifo: demote in order of arrival (promotion or first touch).
//  - run_lru: true LRU, every read and write seen (what accessed bits give).
//  - run_opt: Belady's MIN: demote the host page whose next use is farthest
//    (possibly the page just used); no policy under these rules does better.
// Deterministic: the same trace gives the same result.
#pragma once

#include "policy/tier/tier_model.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace uhmm::tier::sim {

struct Trace {
    static constexpr std::uint32_t kWrite = 1u << 31;
    std::uint32_t pages = 0;          // page numbers are 0 .. pages-1
    std::vector<std::uint32_t> ops;   // page | kWrite
};

struct ZipfSpec {
    std::uint32_t pages = 65536;      // < 2^31
    std::uint64_t accesses = 1u << 21;  // < 2^32
    double skew = 1.0;                // P(rank k) ∝ 1 / k^skew
    double write_share = 0.3;         // each access is a write with this probability
    std::uint64_t seed = 1;
    std::uint64_t phase = 0;          // accesses after which the permutation is redrawn (0: never)
};

// Independent accesses, ranks drawn from Zipf(skew) and mapped to pages by a
// seeded permutation (hot pages are scattered, not the first ones), redrawn
// every `phase` accesses when that is set (the hot set moves). Draws use
// mt19937_64's raw output only, so a seed gives the same trace everywhere.
// Throws std::invalid_argument when the spec is out of range.
Trace zipf_trace(const ZipfSpec& spec);

struct Result {
    std::uint64_t accesses = 0;
    std::uint64_t hits = 0;
    std::uint64_t first_touches = 0;
    std::uint64_t promotions = 0;       // faults of device pages
    std::uint64_t demotions = 0;
    std::uint64_t over_budget_steps = 0;  // accesses after which more than `hot` pages were on the host
    double hit_rate() const { return accesses ? static_cast<double>(hits) / static_cast<double>(accesses) : 0.0; }
};

Result run_tier(const Trace& trace, std::size_t hot, std::uint64_t scan_every, const TierParams& params,
                TierStats* stats = nullptr, std::size_t* protected_target = nullptr);
Result run_fifo(const Trace& trace, std::size_t hot);
Result run_lru(const Trace& trace, std::size_t hot);
Result run_opt(const Trace& trace, std::size_t hot);

}  // namespace uhmm::tier::sim
