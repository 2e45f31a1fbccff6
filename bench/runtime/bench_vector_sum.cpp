// Summing a std::vector<double> that lives on the device, against the same
// sum over plain memory measured in the same run (ratios, never assertions):
//
//  plain:          std::vector<double> (std::allocator), filled, summed: the limit.
//  prefetched:     std::vector<double, uhmm::allocator<double>>, filled,
//                  migrated to the device, then prefetch(to host) and a CPU
//                  sum: prefetch time, sum time and their total reported
//                  apart (no fault is left), and a second sum (the first
//                  access to fresh page-table entries may cost more than
//                  the memory: a hypervisor's shadow paging).
//  fault_driven:   the same vector left on the device and summed by the CPU
//                  directly: the pages come home fault by fault (the fault
//                  window grows along the walk).
//
// Each configuration runs `rounds` times (the vector goes back to the device
// before each, untimed); medians are reported, with the runtime's fault
// counters of the last round and each sum checked against the plain one.
//
// Prints one JSON object. Arguments (key=value, or UHMM_BENCH_<KEY>):
//   bytes=512M rounds=5 arena=memfd config=... (extra RuntimeConfig keys)
//   quick (64M, 3 rounds)
#include <sys/resource.h>

#include <uhmm/allocator.hpp>

#include "common.hpp"

using namespace bench;
using uhmm::Target;

namespace {

using ManagedVector = std::vector<double, uhmm::allocator<double>>;

double value_at(std::size_t i) { return static_cast<double>(i % 4096) * 0.25; }

template <class V>
void fill(V& v) {
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = value_at(i);
}

// The loop measured: a plain sum, four accumulators (vectorisable, as a
// compiler would make of std::accumulate with -ffast-math).
double sum(const double* p, std::size_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; ++i) s0 += p[i];
    return (s0 + s1) + (s2 + s3);
}

// The whole pages holding the vector's elements.
std::pair<void*, std::size_t> pages_of(const void* p, std::size_t bytes) {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t s = a & ~(kPage - 1), e = (a + bytes + kPage - 1) & ~(kPage - 1);
    return {reinterpret_cast<void*>(s), e - s};
}

void to_device(uhmm::Runtime& rt, const ManagedVector& v) {
    auto [p, len] = pages_of(v.data(), v.size() * sizeof(double));
    auto r = migrate_or_die(rt, p, len, Target::device);
    if (r.failed) {
        std::fprintf(stderr, "bench: migrate to the device: %zu pages failed: %s\n", r.failed,
                     r.error.message().c_str());
        std::exit(1);
    }
}

// The kernel's page faults of this process so far (minor: no I/O), which
// include those the userfaultfd then reports to the runtime.
long minor_faults() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
}

// The fault thread counts a fault after waking the faulting thread: let the
// last one land before reading the counters.
uhmm::RuntimeStats settled_stats(const uhmm::Runtime& rt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return rt.stats();
}

}  // namespace

int main(int argc, char** argv) {
    Args args(argc, argv);
    require_uffd();
    const std::size_t bytes = args.size("bytes", "512M", "64M");
    const int rounds = static_cast<int>(args.integer("rounds", 5, 3));
    const std::string arena = args.get("arena", "memfd");
    const std::string extra = args.get("config", "");
    const std::size_t n = bytes / sizeof(double);
    const double gb = static_cast<double>(n * sizeof(double)) / 1e9;

    json report;
    report["benchmark"] = "vector_sum";
    report["bytes"] = n * sizeof(double);
    report["elements"] = n;
    report["rounds"] = rounds;
    report["unit"] = "seconds (median of rounds); GB/s = 1e9 bytes/s";

    // (a) The limit: plain memory, populated by the fill.
    double expected = 0;
    std::vector<double> plain_s;
    long plain_minflt = 0;
    {
        std::vector<double> v(n);
        fill(v);
        expected = sum(v.data(), n);   // warm
        for (int r = 0; r < rounds; ++r) {
            const long f0 = minor_faults();
            const auto t0 = Clock::now();
            const double s = sum(v.data(), n);
            const auto t1 = Clock::now();
            plain_minflt = minor_faults() - f0;
            if (s != expected) {
                std::fprintf(stderr, "bench: plain sum changed: %g vs %g\n", s, expected);
                return 1;
            }
            plain_s.push_back(secs(t0, t1));
        }
    }
    const double plain = median(plain_s);
    report["plain"] = {{"sum_s", round6(plain)}, {"gbps", round3(gb / plain)}, {"minor_faults_last_round", plain_minflt}};

    std::string text = "arena=" + arena + ",arena_size=" + arena_size_for(bytes) + ",socket=off";
    if (arena == "hugepage") text += ",arena_reserve=on";
    if (!extra.empty()) text += "," + extra;
    auto rt = make_runtime(text);
    report["config"] = rt->config().to_string();
    report["describe"] = rt->describe();
    std::size_t mismatches = 0;
    {
        uhmm::allocator<double> alloc(*rt);
        ManagedVector v(n, 0.0, alloc);
        fill(v);
        const auto [span, span_len] = pages_of(v.data(), n * sizeof(double));
        // Warm-up: the arena grows (maps its chunks) here, not in a round.
        to_device(*rt, v);
        (void)migrate_or_die(*rt, span, span_len, Target::host);

        // (b) Prefetched home, then summed.
        std::vector<double> pf_s, pf_sum_s, pf_total_s, pf_again_s;
        json pf_result, pf_stats;
        long pf_minflt = 0;
        for (int r = 0; r < rounds; ++r) {
            to_device(*rt, v);
            const auto s0 = settled_stats(*rt);
            const auto t0 = Clock::now();
            auto res = rt->prefetch(v.data(), n * sizeof(double), Target::host);
            const auto t1 = Clock::now();
            const auto s1 = settled_stats(*rt);
            const long f0 = minor_faults();
            const auto t2 = Clock::now();
            const double s = sum(v.data(), n);
            const auto t3 = Clock::now();
            pf_minflt = minor_faults() - f0;
            // Again, pages untouched by the runtime since: what the first
            // sum paid above this is the first access to fresh page-table
            // entries (a hypervisor's shadow paging makes that dear).
            const auto t4 = Clock::now();
            const double again = sum(v.data(), n);
            const auto t5 = Clock::now();
            if (again != expected) ++mismatches;
            pf_again_s.push_back(secs(t4, t5));
            const auto s2 = settled_stats(*rt);
            if (!res) {
                std::fprintf(stderr, "bench: prefetch: %s\n", res.error().message().c_str());
                return 1;
            }
            if (s != expected) ++mismatches;
            pf_s.push_back(secs(t0, t1));
            pf_sum_s.push_back(secs(t2, t3));
            pf_total_s.push_back(secs(t0, t1) + secs(t2, t3));
            pf_result = to_json(*res);
            pf_stats = {{"prefetch", delta(s0, s1)}, {"sum", delta(s1, s2)}};
        }
        const double pf = median(pf_s), pf_sum = median(pf_sum_s), pf_total = median(pf_total_s);
        report["prefetched"] = {{"prefetch_s", round6(pf)},
                                {"prefetch_gbps", round3(gb / pf)},
                                {"sum_s", round6(pf_sum)},
                                {"total_s", round6(pf_total)},
                                {"second_sum_s", round6(median(pf_again_s))},
                                {"second_sum_vs_plain", ratio(median(pf_again_s), plain)},
                                {"sum_vs_plain", ratio(pf_sum, plain)},
                                {"total_vs_plain", ratio(pf_total, plain)},
                                {"sum_minor_faults_last_round", pf_minflt},
                                {"result", pf_result},
                                {"stats_last_round", pf_stats}};

        // (c) Left on the device, summed by the CPU: fault-driven.
        std::vector<double> fd_s;
        json fd_stats;
        long fd_minflt = 0;
        for (int r = 0; r < rounds; ++r) {
            to_device(*rt, v);
            const auto s0 = settled_stats(*rt);
            const long f0 = minor_faults();
            const auto t0 = Clock::now();
            const double s = sum(v.data(), n);
            const auto t1 = Clock::now();
            fd_minflt = minor_faults() - f0;
            const auto s1 = settled_stats(*rt);
            if (s != expected) ++mismatches;
            fd_s.push_back(secs(t0, t1));
            fd_stats = delta(s0, s1);
        }
        const double fd = median(fd_s);
        report["fault_driven"] = {{"sum_s", round6(fd)},
                                  {"gbps", round3(gb / fd)},
                                  {"sum_vs_plain", ratio(fd, plain)},
                                  {"vs_prefetched_total", ratio(fd, pf_total)},
                                  {"minor_faults_last_round", fd_minflt},
                                  {"stats_last_round", fd_stats}};
    }
    report["mismatches"] = mismatches;
    report["runtime"] = to_json(rt->stats());
    std::printf("%s\n", report.dump(2).c_str());
    return mismatches ? 1 : 0;
}
