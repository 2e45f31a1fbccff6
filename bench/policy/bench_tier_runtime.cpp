// policy=tier in a real runtime, on the Zipf traces of bench_tier_hit_rate:
// real first touches and device faults are the misses, real migrations the
// demotions, writes are seen through the policy's write watch. Against, for
// the same trace in the same run: the simulation of the model (what it gets
// when its budget holds after every access and it sees every write every
// `round` accesses), FIFO and Belady's optimum; and the trace's time over
// plain memory (the slowdown).
//
// Rounds: one every `round` accesses from the benchmark's thread
// (Runtime::policy_round), besides the policy's own every 50 ms, so that the
// result does not depend on the machine's speed. Between two rounds the host
// may hold more than the budget (the pages faulted meanwhile): the mean and
// the largest host residency at a round's start are reported beside it.
//
// Arguments (key=value or UHMM_BENCH_<KEY>): pages=16384 accesses=500000
// seed=1 skews=0.9,1.1 hot=0.1,0.25 writes=0.3 phase=0 round=256; quick (2048 pages,
// 50000 accesses).
#include "sim_json.hpp"

#include <uhmm/runtime.hpp>

namespace {

struct Counts {
    std::uint64_t misses = 0, first_touches = 0, from_device = 0, to_device = 0, watched_writes = 0;
};

Counts counts(const uhmm::RuntimeStats& s) {
    // fault_around=4K: one page per fault, so pages are faults.
    return {s.pages_zero_filled + s.pages_to_host_on_fault, s.pages_zero_filled, s.pages_to_host_on_fault,
            s.pages_to_device, s.watched_writes};
}

std::size_t host_pages(const uhmm::Runtime& rt) {
    std::size_t n = 0;
    for (const auto& r : rt.ranges()) n += r.pages[static_cast<int>(uhmm::PageState::host)];
    return n;
}

// One access per op: a 64-byte line of the page (varied so that the loads
// are not all the same line), read or incremented.
inline std::uint64_t access(std::byte* base, std::uint32_t op, std::size_t i) {
    const std::size_t page = op & ~sim::Trace::kWrite;
    auto* word = reinterpret_cast<volatile std::uint64_t*>(base + page * kPage + (i % 64) * 64);
    if (op & sim::Trace::kWrite) {
        *word = *word + 1;
        return 0;
    }
    return *word;
}

double run_plain(const sim::Trace& trace) {
    const std::size_t len = std::size_t{trace.pages} * kPage;
    void* m = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        std::perror("bench: mmap");
        std::exit(1);
    }
    auto* base = static_cast<std::byte*>(m);
    std::uint64_t sink = 0;
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < trace.ops.size(); ++i) sink += access(base, trace.ops[i], i);
    const double s = secs(t0, Clock::now());
    ::munmap(m, len);
    if (sink == 42) std::fprintf(stderr, " ");
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    Args args(argc, argv);
    sim::ZipfSpec spec = zipf_spec(args, 16384, 2048, 500000, 50000);
    const auto skews = args.reals("skews", "0.9,1.1");
    const auto hot_shares = args.reals("hot", "0.1,0.25");
    const auto round_every = static_cast<std::size_t>(args.integer("round", 256, 256));
    const std::size_t len = std::size_t{spec.pages} * kPage;

    json runs = json::array();
    for (double skew : skews) {
        spec.skew = skew;
        const sim::Trace trace = sim::zipf_trace(spec);
        const double plain_s = run_plain(trace);
        for (double share : hot_shares) {
            const auto hot = std::max<std::size_t>(1, static_cast<std::size_t>(share * spec.pages));
            const std::string conf = "arena=memfd,arena_size=" + arena_size_for(len) +
                                     ",policy=tier,fault_around=4K,tier_hot=" + std::to_string(hot * kPage);
            auto rt = make_runtime(conf);
            auto mem = rt->allocate(len);
            if (!mem) {
                std::fprintf(stderr, "bench: allocate: %s\n", mem.error().message().c_str());
                return 1;
            }
            auto* base = static_cast<std::byte*>(*mem);
            const Counts before = counts(rt->stats());
            std::uint64_t sink = 0;
            double host_sum = 0;
            std::size_t host_max = 0, rounds = 0;
            const auto t0 = Clock::now();
            for (std::size_t i = 0; i < trace.ops.size(); ++i) {
                sink += access(base, trace.ops[i], i);
                if ((i + 1) % round_every == 0) {
                    const std::size_t h = host_pages(*rt);
                    host_sum += static_cast<double>(h);
                    host_max = std::max(host_max, h);
                    ++rounds;
                    (void)rt->policy_round();
                }
            }
            const double managed_s = secs(t0, Clock::now());
            const Counts after = counts(rt->stats());
            if (sink == 42) std::fprintf(stderr, " ");
            const double accesses = static_cast<double>(trace.ops.size());
            const double runtime_hit = 1.0 - static_cast<double>(after.misses - before.misses) / accesses;

            uhmm::tier::TierParams params;   // as bench_tier_hit_rate: grace = one scan
            params.grace = round_every;
            const auto tier = sim::run_tier(trace, hot, round_every, params);
            const auto fifo = sim::run_fifo(trace, hot);
            const auto opt = sim::run_opt(trace, hot);
            runs.push_back({{"skew", skew},
                            {"hot_share", share},
                            {"hot_pages", hot},
                            {"hit_rate",
                             {{"runtime", round6(runtime_hit)},
                              {"sim_tier", round6(tier.hit_rate())},
                              {"fifo", round6(fifo.hit_rate())},
                              {"opt", round6(opt.hit_rate())}}},
                            {"runtime_over_fifo", round3(runtime_hit / fifo.hit_rate())},
                            {"runtime_over_opt", round3(runtime_hit / opt.hit_rate())},
                            {"runtime",
                             {{"first_touches", after.first_touches - before.first_touches},
                              {"pages_from_device", after.from_device - before.from_device},
                              {"pages_to_device", after.to_device - before.to_device},
                              {"watched_writes", after.watched_writes - before.watched_writes},
                              {"host_pages_mean_at_round", round3(rounds ? host_sum / rounds : 0)},
                              {"host_pages_max_at_round", host_max},
                              {"host_mean_over_budget", round3(rounds ? host_sum / rounds / hot : 0)},
                              {"seconds", round3(managed_s)}}},
                            {"plain_seconds", round6(plain_s)},
                            {"slowdown_vs_plain", ratio(managed_s, plain_s)},
                            {"sim_tier", to_json(tier)},
                            {"opt", to_json(opt)}});
            (void)rt->release(base, len);
        }
    }
    json out = {{"bench", "tier_runtime"},
                {"pages", spec.pages},
                {"accesses", spec.accesses},
                {"seed", spec.seed},
                {"write_share", spec.write_share},
                {"round_every", round_every},
                {"runs", runs}};
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
}
