// The tier policy's hit rate (accesses that found their page host-resident)
// on skewed traces, against what is possible in the same run: Belady's
// optimal offline choice (the ceiling for any policy), true LRU that sees
// every read (what a kernel with accessed bits could do), FIFO (the floor a
// policy must clear), and LRU over the same visible signals as the model
// (which shows what the model's segments and refault detection add).
//
// Trace: `pages` pages, `accesses` independent accesses drawn from
// Zipf(skew) over a seeded permutation of the pages, each a write with
// probability `writes`. The model sees first touches, promotions and, every
// `scan` accesses, the pages written since the previous scan; never reads.
// Budgets: `hot` shares of the pages. Ticks are access numbers.
//
// Prints one JSON object. Arguments: pages=65536 accesses=2000000 seed=1
// skews=0.9,1.1 hot=0.1,0.25 writes=0.3 scan=1024 phase=0 (accesses between
// moves of the hot set; 0: never) and the model's TierParams: grace=<scan>
// grace_share=0.25 protected=0.75 window=1.0 adapt=1; quick (4096 pages,
// 200000 accesses, scan=256).
#include "sim_json.hpp"

int main(int argc, char** argv) {
    Args args(argc, argv);
    sim::ZipfSpec spec = zipf_spec(args, 65536, 4096, 2000000, 200000);
    const auto skews = args.reals("skews", "0.9,1.1");
    const auto hot_shares = args.reals("hot", "0.1,0.25");
    const auto scan = static_cast<std::uint64_t>(args.integer("scan", 1024, 256));
    uhmm::tier::TierParams params;
    params.grace = static_cast<uhmm::tier::Tick>(args.real("grace", std::to_string(scan)));
    params.grace_share = args.real("grace_share", "0.25");
    params.protected_share = args.real("protected", "0.75");
    params.refault_window = args.real("window", "1.0");
    params.adapt = args.real("adapt", "1") != 0;

    // The same signals, no segments and no refault detection: LRU by last
    // visible use (a promotion or a scan's written bit), with the same grace.
    uhmm::tier::TierParams visible_lru = params;
    visible_lru.protected_share = 0;
    visible_lru.refault_window = 0;

    json runs = json::array();
    for (double skew : skews) {
        spec.skew = skew;
        const sim::Trace trace = sim::zipf_trace(spec);
        for (double share : hot_shares) {
            const auto hot = static_cast<std::size_t>(share * spec.pages);
            uhmm::tier::TierStats stats;
            std::size_t target = 0;
            const auto tier = sim::run_tier(trace, hot, scan, params, &stats, &target);
            const auto vlru = sim::run_tier(trace, hot, scan, visible_lru);
            const auto fifo = sim::run_fifo(trace, hot);
            const auto lru = sim::run_lru(trace, hot);
            const auto opt = sim::run_opt(trace, hot);
            runs.push_back({{"skew", skew},
                            {"hot_share", share},
                            {"hot_pages", hot},
                            {"hit_rate",
                             {{"tier", round6(tier.hit_rate())},
                              {"lru_visible", round6(vlru.hit_rate())},
                              {"fifo", round6(fifo.hit_rate())},
                              {"lru_full", round6(lru.hit_rate())},
                              {"opt", round6(opt.hit_rate())}}},
                            {"tier_over_opt", round3(tier.hit_rate() / opt.hit_rate())},
                            {"tier_over_fifo", round3(tier.hit_rate() / fifo.hit_rate())},
                            {"tier_over_lru_full", round3(tier.hit_rate() / lru.hit_rate())},
                            {"tier", to_json(tier)},
                            {"tier_model", to_json(stats)},
                            {"protected_target_end", target},
                            {"opt", to_json(opt)}});
            if (tier.over_budget_steps) {
                std::fprintf(stderr, "bench: the model left more than %zu pages on the host\n", hot);
                return 1;
            }
        }
    }
    json out = {{"bench", "tier_hit_rate"},
                {"pages", spec.pages},
                {"accesses", spec.accesses},
                {"seed", spec.seed},
                {"write_share", spec.write_share},
                {"scan_every", scan},
                {"phase", spec.phase},
                {"grace", params.grace},
                {"grace_share", params.grace_share},
                {"protected_share", params.protected_share},
                {"refault_window", params.refault_window},
                {"adapt", params.adapt},
                {"runs", runs}};
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
}
