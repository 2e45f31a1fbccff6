// CPU touches of runtime-managed memory, one byte per 4 KiB page, against the
// limits measured in the same run (µs per page; ratios, never assertions):
//
//  sequential_device_touch: seq_size (1 GiB) migrated to the device, then every
//    page read in order (and, after migrating again, written in order), for
//    each fault_around value — against the kernel's own first touch of fresh
//    anonymous memory (mmap + MADV_NOHUGEPAGE, one access per page). Windows
//    under 64 KiB fault on every page, so they touch small_fa_size (256 MiB).
//  random_device_touch: rand_pages (20,000) distinct pages out of rand_span
//    (256 MiB) on the device, touched in random order, default fault_around —
//    against a raw userfaultfd MISSING + UFFDIO_COPY 4 KiB round trip (one bare
//    handler thread: poll, read, ioctl) touched in the same order, same rounds.
//  first_touch_managed: Runtime::allocate(first_size) then one write per page
//    in order, and rand_pages random pages of an allocate(first_rand_span) —
//    against plain anonymous memory touched the same way, same rounds.
//
// Prints one JSON object. Arguments (key=value, or UHMM_BENCH_<KEY>):
//   seq_size=1G small_fa_size=256M rand_span=256M rand_pages=20000 first_size=256M
//   first_rand_span=1G rounds=3 (sequential sweep) rand_rounds=5 (random and
//   first touch) fault_around=4K,64K,256K,2M arena=memfd
//   config=... (extra RuntimeConfig keys) parts=seq,random,first
//   round_budget_s=20 (a sweep point stops after the round that passes it)
//   quick (64M sizes, 2,000 random pages)
#include "common.hpp"

using namespace bench;
using uhmm::Target;

namespace {

struct Opts {
    std::size_t seq_size, small_fa_size, rand_span, rand_pages, first_size, first_rand_span;
    int rounds, rand_rounds;
    double round_budget_s;
    std::vector<std::string> fault_around;
    std::string arena, extra;
};

std::string base_config(const Opts& o, std::size_t device_bytes) {
    std::string t = "arena=" + o.arena + ",arena_size=" + arena_size_for(device_bytes);
    if (o.arena == "hugepage") t += ",arena_reserve=on";
    if (!o.extra.empty()) t += "," + o.extra;
    return t;
}

void manage_or_die(uhmm::Runtime& rt, Region& reg) {
    std::string why;
    if (auto ec = rt.manage(reg.p, reg.len, &why)) {
        std::fprintf(stderr, "bench: manage: %s: %s\n", ec.message().c_str(), why.c_str());
        std::exit(1);
    }
}

// The fault thread counts a fault after it has woken the faulting thread, so a
// snapshot taken right after a touch loop can miss the last fault: let it finish.
uhmm::RuntimeStats settled_stats(const uhmm::Runtime& rt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return rt.stats();
}

double us_per_page(double seconds, std::size_t pages) { return seconds * 1e6 / static_cast<double>(pages); }

json us(double v) { return round3(v); }

// ---- sequential touch of device pages, one fault_around value -----------------------

// `whole` holds the pattern and is host-resident between points (unmanage
// brings device pages home), so every point reuses it.
json sequential_point(const Opts& o, const std::string& fa, Region& whole) {
    auto rt = make_runtime(base_config(o, o.seq_size) + ",fault_around=" + fa);
    // Windows under 64 KiB fault (almost) every page: a smaller range gives
    // the same µs per page in a fraction of the time.
    const std::size_t len = rt->config().fault_around < (64u << 10) ? std::min(o.seq_size, o.small_fa_size) : o.seq_size;
    struct {
        std::byte* p;
        std::size_t len;
    } reg{whole.p, len};
    std::string why;
    if (auto ec = rt->manage(reg.p, reg.len, &why)) {
        std::fprintf(stderr, "bench: manage: %s: %s\n", ec.message().c_str(), why.c_str());
        std::exit(1);
    }
    const auto order = in_order(len / kPage);
    // Warm-up: grow the arena, so that rounds measure faults, not chunk mapping.
    (void)migrate_or_die(*rt, reg.p, reg.len, Target::device);
    (void)migrate_or_die(*rt, reg.p, reg.len, Target::host);

    std::vector<double> rd, wr;
    json stats_read, stats_write, residency_after_read, residency_before_write, mig_read, mig_write;
    for (int r = 0; r < o.rounds; ++r) {
        const auto r0 = Clock::now();
        mig_read = to_json(migrate_or_die(*rt, reg.p, reg.len, Target::device));
        const auto a = rt->stats();
        rd.push_back(us_per_page(touch(reg.p, order, false), order.size()));
        const auto b = settled_stats(*rt);
        residency_after_read = residency_json(*rt, reg.p, reg.len);
        mig_write = to_json(migrate_or_die(*rt, reg.p, reg.len, Target::device));
        residency_before_write = residency_json(*rt, reg.p, reg.len);
        const auto c = rt->stats();
        wr.push_back(us_per_page(touch(reg.p, order, true), order.size()));
        const auto d = settled_stats(*rt);
        stats_read = delta(a, b);
        stats_write = delta(c, d);
        if (secs(r0, Clock::now()) > o.round_budget_s) break;
    }
    const double read_us = median(rd), write_us = median(wr);
    json out = {
        {"config", rt->config().to_string()},
        {"fault_around_bytes", rt->config().fault_around},
        {"bytes", len},
        {"rounds_done", rd.size()},
        {"read_us_per_page", us(read_us)},
        {"write_us_per_page", us(write_us)},
        {"read_samples", rd},
        {"write_samples", wr},
        {"stats_read_pass", stats_read},
        {"stats_write_pass", stats_write},
        {"residency_after_read_pass", residency_after_read},
        {"residency_before_write_pass", residency_before_write},
        {"migrate_before_read_pass", mig_read},
        {"migrate_before_write_pass", mig_write},
        {"data_errors_pages", check_pattern(reg.p, reg.len)},
    };
    (void)rt->unmanage(reg.p, reg.len);
    return out;
}

// ---- random touch of device pages ------------------------------------------------------

json random_device(const Opts& o) {
    auto rt = make_runtime(base_config(o, o.rand_span));
    Region reg(o.rand_span);
    fill_pattern(reg.p, reg.len);
    manage_or_die(*rt, reg);
    (void)migrate_or_die(*rt, reg.p, reg.len, Target::device);
    (void)migrate_or_die(*rt, reg.p, reg.len, Target::host);
    const auto order_r = random_pages(reg.pages(), o.rand_pages, 1);
    const auto order_w = random_pages(reg.pages(), o.rand_pages, 2);

    std::vector<double> raw_r, raw_w, rd, wr;
    json stats_read, stats_write, residency_after_read;
    auto raw = [&] {
        raw_r.push_back(raw_uffd_copy_us(reg.len, order_r, false));
        raw_w.push_back(raw_uffd_copy_us(reg.len, order_w, true));
    };
    // The limit and the runtime in alternating order, round by round, so that
    // neither always runs first after the other's memory churn.
    for (int r = 0; r < o.rand_rounds; ++r) {
        if (r % 2 == 0) raw();
        (void)migrate_or_die(*rt, reg.p, reg.len, Target::device);
        const auto a = rt->stats();
        rd.push_back(us_per_page(touch(reg.p, order_r, false), order_r.size()));
        const auto b = settled_stats(*rt);
        residency_after_read = residency_json(*rt, reg.p, reg.len);
        (void)migrate_or_die(*rt, reg.p, reg.len, Target::device);
        const auto c = rt->stats();
        wr.push_back(us_per_page(touch(reg.p, order_w, true), order_w.size()));
        const auto d = settled_stats(*rt);
        stats_read = delta(a, b);
        stats_write = delta(c, d);
        if (r % 2 == 1) raw();
    }
    (void)migrate_or_die(*rt, reg.p, reg.len, Target::host);
    const double raw_read = median(raw_r), raw_write = median(raw_w);
    const double read_us = median(rd), write_us = median(wr);
    json out = {
        {"config", rt->config().to_string()},
        {"fault_around_bytes", rt->config().fault_around},
        {"span_bytes", reg.len},
        {"pages_touched", order_r.size()},
        {"rounds", rd.size()},
        {"limits",
         {{"raw_uffd_copy_read_us", us(raw_read)},
          {"raw_uffd_copy_write_us", us(raw_write)},
          {"raw_uffd_copy_read_samples", raw_r},
          {"raw_uffd_copy_write_samples", raw_w}}},
        {"read_us_per_page", us(read_us)},
        {"write_us_per_page", us(write_us)},
        {"read_samples", rd},
        {"write_samples", wr},
        {"ratios",
         {{"read_vs_raw_uffd", ratio(read_us, raw_read)}, {"write_vs_raw_uffd", ratio(write_us, raw_write)}}},
        {"stats_read_pass", stats_read},
        {"stats_write_pass", stats_write},
        {"residency_after_read_pass", residency_after_read},
        {"data_errors_pages", check_pattern(reg.p, reg.len)},
    };
    (void)rt->unmanage(reg.p, reg.len);
    return out;
}

// ---- first touch of managed memory --------------------------------------------------------

json first_touch(const Opts& o) {
    auto rt = make_runtime(base_config(o, 64u << 20));
    const auto seq = in_order(o.first_size / kPage);
    const auto rnd = random_pages(o.first_rand_span / kPage, o.rand_pages, 3);

    std::vector<double> k_seq, k_rnd, m_seq, m_rnd, alloc_us, release_us;
    json stats_seq, stats_rnd, residency_rnd;
    auto managed = [&](std::size_t len, const std::vector<std::uint32_t>& order, json& stats, json* residency) {
        const auto t0 = Clock::now();
        auto p = rt->allocate(len);
        const auto t1 = Clock::now();
        if (!p) {
            std::fprintf(stderr, "bench: allocate(%zu): %s\n", len, p.error().message().c_str());
            std::exit(1);
        }
        auto* base = static_cast<std::byte*>(*p);
        const auto a = rt->stats();
        const double t = touch(base, order, true);
        const auto b = settled_stats(*rt);
        stats = delta(a, b);
        if (residency) *residency = residency_json(*rt, base, len);
        const auto t2 = Clock::now();
        if (auto ec = rt->release(base, len)) std::fprintf(stderr, "bench: release: %s\n", ec.message().c_str());
        const auto t3 = Clock::now();
        alloc_us.push_back(secs(t0, t1) * 1e6);
        release_us.push_back(secs(t2, t3) * 1e6);
        return us_per_page(t, order.size());
    };
    for (int r = 0; r < o.rand_rounds; ++r) {
        k_seq.push_back(kernel_first_touch_us(o.first_size, seq, true));
        m_seq.push_back(managed(o.first_size, seq, stats_seq, nullptr));
        k_rnd.push_back(kernel_first_touch_us(o.first_rand_span, rnd, true));
        m_rnd.push_back(managed(o.first_rand_span, rnd, stats_rnd, &residency_rnd));
    }
    const double ks = median(k_seq), kr = median(k_rnd), ms = median(m_seq), mr = median(m_rnd);
    return {
        {"config", rt->config().to_string()},
        {"sequential_bytes", o.first_size},
        {"random_span_bytes", o.first_rand_span},
        {"random_pages", rnd.size()},
        {"rounds", m_seq.size()},
        {"limits",
         {{"kernel_first_touch_write_seq_us", us(ks)},
          {"kernel_first_touch_write_random_us", us(kr)},
          {"kernel_first_touch_write_seq_samples", k_seq},
          {"kernel_first_touch_write_random_samples", k_rnd}}},
        {"sequential_write_us_per_page", us(ms)},
        {"random_write_us_per_page", us(mr)},
        {"sequential_write_samples", m_seq},
        {"random_write_samples", m_rnd},
        {"ratios", {{"sequential_vs_kernel", ratio(ms, ks)}, {"random_vs_kernel", ratio(mr, kr)}}},
        {"allocate_us", us(median(alloc_us))},
        {"release_us", us(median(release_us))},
        {"stats_sequential_pass", stats_seq},
        {"stats_random_pass", stats_rnd},
        {"residency_after_random_pass", residency_rnd},
    };
}

}  // namespace

int main(int argc, char** argv) {
    Args args(argc, argv);
    require_uffd();
    Opts o;
    o.seq_size = args.size("seq_size", "1G", "64M");
    o.small_fa_size = args.size("small_fa_size", "256M", "64M");
    o.rand_span = args.size("rand_span", "256M", "64M");
    o.rand_pages = static_cast<std::size_t>(args.integer("rand_pages", 20000, 2000));
    o.first_size = args.size("first_size", "256M", "64M");
    o.first_rand_span = args.size("first_rand_span", "1G", "64M");
    o.rounds = static_cast<int>(args.integer("rounds", 3, 3));
    o.rand_rounds = static_cast<int>(args.integer("rand_rounds", 5, 3));
    o.round_budget_s = static_cast<double>(args.integer("round_budget_s", 20, 20));
    o.fault_around = args.list("fault_around", "4K,64K,256K,2M");
    o.arena = args.get("arena", "memfd");
    o.extra = args.get("config", "");
    const auto parts = args.list("parts", "seq,random,first");
    auto want = [&](const char* p) { return std::find(parts.begin(), parts.end(), p) != parts.end(); };

    json report;
    report["benchmark"] = "runtime_touch";
    report["unit"] = "us_per_page";
    report["rounds"] = o.rounds;
    {
        auto rt = make_runtime(base_config(o, o.seq_size));
        report["default_config"] = rt->config().to_string();
        report["default_fault_around_bytes"] = uhmm::RuntimeConfig{}.fault_around;
        report["describe"] = rt->describe();
    }
    json ratios;

    if (want("seq")) {
        Region whole(o.seq_size);
        fill_pattern(whole.p, whole.len);
        const std::size_t small = std::min(o.seq_size, o.small_fa_size);
        const auto order = in_order(o.seq_size / kPage), small_order = in_order(small / kPage);
        // The limits, sampled once before each point (drift shows in the samples).
        std::vector<double> kr, kw;
        json points;
        for (const auto& fa : o.fault_around) {
            kw.push_back(kernel_first_touch_us(o.seq_size, order, true));
            kr.push_back(kernel_first_touch_us(small, small_order, false));
            points[fa] = sequential_point(o, fa, whole);
        }
        const double kernel_read = median(kr), kernel_write = median(kw);
        json seq = {{"bytes", o.seq_size},
                    {"limits",
                     {{"kernel_first_touch_write_us", us(kernel_write)},
                      {"kernel_first_touch_read_us", us(kernel_read)},
                      {"kernel_first_touch_write_bytes", o.seq_size},
                      {"kernel_first_touch_read_bytes", small},
                      {"kernel_first_touch_write_samples", kw},
                      {"kernel_first_touch_read_samples", kr}}}};
        double best = 0;
        std::string best_fa;
        for (const auto& fa : o.fault_around) {
            json& point = points[fa];
            const double rd = point["read_us_per_page"].get<double>(), wr = point["write_us_per_page"].get<double>();
            point["ratios"] = {{"read_vs_kernel_first_touch_read", ratio(rd, kernel_read)},
                               {"write_vs_kernel_first_touch_write", ratio(wr, kernel_write)},
                               {"read_vs_kernel_first_touch_write", ratio(rd, kernel_write)}};
            if (best_fa.empty() || rd + wr < best) best = rd + wr, best_fa = fa;
            ratios["seq_read_vs_kernel_fa_" + fa] = point["ratios"]["read_vs_kernel_first_touch_read"];
            ratios["seq_write_vs_kernel_fa_" + fa] = point["ratios"]["write_vs_kernel_first_touch_write"];
        }
        seq["by_fault_around"] = std::move(points);
        seq["fastest_fault_around"] = best_fa;
        report["sequential_device_touch"] = seq;
    }
    if (want("random")) {
        auto rnd = random_device(o);
        ratios["random_read_vs_raw_uffd"] = rnd["ratios"]["read_vs_raw_uffd"];
        ratios["random_write_vs_raw_uffd"] = rnd["ratios"]["write_vs_raw_uffd"];
        report["random_device_touch"] = rnd;
    }
    if (want("first")) {
        auto ft = first_touch(o);
        ratios["first_touch_seq_vs_kernel"] = ft["ratios"]["sequential_vs_kernel"];
        ratios["first_touch_random_vs_kernel"] = ft["ratios"]["random_vs_kernel"];
        report["first_touch_managed"] = ft;
    }
    report["ratios"] = ratios;
    report["goals"] = {{"seq_vs_kernel_first_touch", "<= 1.0 (aim 0.25)"},
                       {"random_vs_raw_uffd", "<= 1.3"},
                       {"first_touch_vs_kernel", "<= 1.5"}};
    std::printf("%s\n", report.dump(2).c_str());
    return 0;
}
