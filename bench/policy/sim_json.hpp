// What the tier benchmarks share: the trace's arguments, and the
// simulation's results as JSON.
#pragma once

#include "policy/tier/tier_sim.hpp"

#include "../runtime/common.hpp"

using namespace bench;
namespace sim = uhmm::tier::sim;

inline json to_json(const sim::Result& r) {
    return {{"hit_rate", round6(r.hit_rate())},
            {"hits", r.hits},
            {"first_touches", r.first_touches},
            {"promotions", r.promotions},
            {"demotions", r.demotions},
            {"over_budget_steps", r.over_budget_steps}};
}

inline json to_json(const uhmm::tier::TierStats& s) {
    return {{"first_touches", s.first_touches},     {"promotions", s.promotions},
            {"demotions", s.demotions},             {"refaults_proven", s.refaults_proven},
            {"writes_proven", s.writes_proven},     {"overflows", s.overflows},
            {"refaults_probation", s.refaults_probation}, {"refaults_protected", s.refaults_protected}};
}

// The trace from pages=, accesses=, seed=, writes= and phase= (defaults
// given, then `quick` ones); exits 2 on values out of range.
inline sim::ZipfSpec zipf_spec(const Args& args, long pages, long quick_pages, long accesses, long quick_accesses) {
    sim::ZipfSpec spec;
    spec.pages = static_cast<std::uint32_t>(args.integer("pages", pages, quick_pages));
    spec.accesses = static_cast<std::uint64_t>(args.integer("accesses", accesses, quick_accesses));
    spec.seed = static_cast<std::uint64_t>(args.integer("seed", 1, 1));
    spec.write_share = args.real("writes", "0.3");
    spec.phase = static_cast<std::uint64_t>(args.real("phase", "0"));
    if (spec.pages >= sim::Trace::kWrite || spec.write_share > 1) {
        std::fprintf(stderr, "bench: pages below 2^31, writes in [0, 1]\n");
        std::exit(2);
    }
    return spec;
}
