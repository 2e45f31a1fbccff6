// Migration by request: Runtime::migrate of `size` bytes (default 1 GiB) of
// populated 4 KiB pages to the device and back, for each arena kind, against
// plain memcpy of the same size between two already-populated buffers measured
// in the same rounds (the limit). GB/s by the caller's wall clock and by
// MigrateResult.seconds; the first (cold) round — which grows the arena — is
// reported apart from the medians of the warm rounds; to_device is measured
// both on pages the CPU read since they came home and on pages it did not
// (see "notes" in the output). Prints one JSON object.
//
// Arguments (key=value, or UHMM_BENCH_<KEY> in the environment):
//   size=1G          bytes migrated each way (quick: 64M)
//   rounds=5         warm rounds (quick: 3)
//   arenas=hugepage,memfd
//                    hugepage means arena=hugepage,arena_reserve=on (root may
//                    reserve huge pages; otherwise the arena falls back to a
//                    memfd and describe() says so)
//   engines=auto,memcpy
//                    copy engines, each with each arena: "memfd" is engine=auto
//                    (io_uring when usable), "memfd+memcpy" is engine=memcpy
//   config=...       extra RuntimeConfig keys appended to each (e.g. migrate_batch=2M)
//   quick            small sizes for a smoke run
#include "common.hpp"

using namespace bench;
using uhmm::Target;

namespace {

struct Directional {
    std::vector<double> wall_gbps, result_gbps, wall_s, result_s;
};

json summarize(const Directional& d) {
    return {{"gbps_wall", round3(median(d.wall_gbps))},
            {"gbps_by_result_seconds", round3(median(d.result_gbps))},
            {"wall_seconds", round6(median(d.wall_s))},
            {"result_seconds", round6(median(d.result_s))},
            {"gbps_wall_samples", d.wall_gbps}};
}

double memcpy_gbps(std::byte* dst, const std::byte* src, std::size_t len) {
    const auto t0 = Clock::now();
    std::memcpy(dst, src, len);
    const auto t1 = Clock::now();
    g_sink = static_cast<std::uint64_t>(dst[len / 2]);
    return static_cast<double>(len) / secs(t0, t1) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
    Args args(argc, argv);
    require_uffd();
    const std::size_t size = args.size("size", "1G", "64M");
    const int rounds = static_cast<int>(args.integer("rounds", 5, 3));
    const auto arenas = args.list("arenas", "hugepage,memfd");
    const auto engines = args.list("engines", "auto,memcpy");
    const std::string extra = args.get("config", "");
    const double gb = static_cast<double>(size) / 1e9;

    // The limit: memcpy between two buffers populated (and copied once) beforehand.
    Region a(size), b(size);
    std::memset(a.p, 0x11, size);
    std::memset(b.p, 0x22, size);
    (void)memcpy_gbps(b.p, a.p, size);

    json report;
    report["benchmark"] = "runtime_migrate";
    report["bytes"] = size;
    report["rounds"] = rounds;
    report["unit"] = "GB/s (1e9 bytes/s); seconds";
    report["nr_hugepages_before"] = read_long("/proc/sys/vm/nr_hugepages");

    std::vector<double> memcpy_all;
    json ratios;
    std::vector<std::pair<std::string, std::string>> configs;   // (name, config text)
    for (const auto& kind : arenas) {
        for (const auto& engine : engines) {
            std::string text = "arena=" + kind + ",arena_size=" + arena_size_for(size) + ",engine=" + engine;
            if (kind == "hugepage") text += ",arena_reserve=on";
            if (!extra.empty()) text += "," + extra;
            configs.emplace_back(engine == "auto" ? kind : kind + "+" + engine, text);
        }
    }
    // One range for every configuration: unmanage brings its pages home.
    Region reg(size);
    fill_pattern(reg.p, size);
    for (const auto& [kind, text] : configs) {
        auto rt = make_runtime(text);
        json out;
        out["config"] = rt->config().to_string();
        out["describe"] = rt->describe();

        std::string why;
        if (auto ec = rt->manage(reg.p, size, &why)) {
            std::fprintf(stderr, "bench: manage: %s: %s\n", ec.message().c_str(), why.c_str());
            return 1;
        }
        const auto s0 = rt->stats();

        // Cold round: the arena grows (maps and populates its chunks) here.
        {
            auto t0 = Clock::now();
            auto to_dev = migrate_or_die(*rt, reg.p, size, Target::device);
            auto t1 = Clock::now();
            out["residency_after_to_device"] = residency_json(*rt, reg.p, size);
            auto t2 = Clock::now();
            auto to_host = migrate_or_die(*rt, reg.p, size, Target::host);
            auto t3 = Clock::now();
            out["residency_after_to_host"] = residency_json(*rt, reg.p, size);
            out["cold"] = {{"to_device", {{"gbps_wall", round3(gb / secs(t0, t1))}, {"result", to_json(to_dev)}}},
                           {"to_host", {{"gbps_wall", round3(gb / secs(t2, t3))}, {"result", to_json(to_host)}}}};
        }

        // Each round: memcpy (the limit); to the device straight after the
        // pages came home by request (their PTEs were installed by the kernel
        // and never touched by the CPU since: under this hypervisor's shadow
        // paging the copy pays each page's first access, see "notes"); home;
        // the CPU reads one byte per page (untimed, as an application uses its
        // data between migrations); to the device again; home.
        Directional dev, dev_untouched, host;
        std::vector<double> mc;
        uhmm::MigrateResult last_dev, last_host;
        auto one_way = [&](Target to, Directional& d) {
            const auto t0 = Clock::now();
            auto res = migrate_or_die(*rt, reg.p, size, to);
            const double w = secs(t0, Clock::now());
            d.wall_s.push_back(w);
            d.result_s.push_back(res.seconds);
            d.wall_gbps.push_back(gb / w);
            d.result_gbps.push_back(res.seconds > 0 ? gb / res.seconds : 0);
            (to == Target::device ? last_dev : last_host) = res;
        };
        const auto order = in_order(size / kPage);
        for (int r = 0; r < rounds; ++r) {
            mc.push_back(memcpy_gbps(b.p, a.p, size));
            one_way(Target::device, dev_untouched);
            one_way(Target::host, host);
            (void)touch(reg.p, order, false);
            one_way(Target::device, dev);
            one_way(Target::host, host);
        }
        const auto s1 = rt->stats();
        const std::size_t bad = check_pattern(reg.p, size);   // all home now: plain reads

        const double memcpy_med = median(mc);
        memcpy_all.insert(memcpy_all.end(), mc.begin(), mc.end());
        out["memcpy_gbps"] = round3(memcpy_med);
        out["memcpy_gbps_samples"] = mc;
        out["to_device"] = summarize(dev);
        out["to_device_untouched_since_home"] = summarize(dev_untouched);
        out["to_host"] = summarize(host);
        out["last_round"] = {{"to_device", to_json(last_dev)}, {"to_host", to_json(last_host)}};
        out["data_errors_pages"] = bad;
        out["stats_delta"] = delta(s0, s1);
        out["stats"] = to_json(s1);
        out["ratios"] = {{"to_device_vs_memcpy", ratio(median(dev.wall_gbps), memcpy_med)},
                         {"to_device_untouched_vs_memcpy", ratio(median(dev_untouched.wall_gbps), memcpy_med)},
                         {"to_host_vs_memcpy", ratio(median(host.wall_gbps), memcpy_med)}};
        ratios[kind + "_to_device_untouched_vs_memcpy"] = ratio(median(dev_untouched.wall_gbps), memcpy_med);
        ratios[kind + "_to_device_vs_memcpy"] = ratio(median(dev.wall_gbps), memcpy_med);
        ratios[kind + "_to_host_vs_memcpy"] = ratio(median(host.wall_gbps), memcpy_med);

        if (auto ec = rt->unmanage(reg.p, size)) out["unmanage_error"] = ec.message();
        const auto d0 = Clock::now();
        rt.reset();
        out["runtime_destroy_seconds"] = round3(secs(d0, Clock::now()));
        out["nr_hugepages_after_destroy"] = read_long("/proc/sys/vm/nr_hugepages");
        report["arenas"][kind] = out;
    }
    report["limits"] = {{"memcpy_gbps", round3(median(memcpy_all))}};
    report["ratios"] = ratios;
    report["goals"] = {{"to_device_vs_memcpy", ">= 0.5"}};
    report["notes"] =
        "to_device: the pages were read by the CPU (user mode) since they came home, as an application's are; "
        "to_device_untouched_since_home: straight after migrate(host), whose UFFDIO_COPY installed PTEs nothing "
        "has used. On this PVM guest (shadow paging) the first access to a freshly installed page costs ~2-3 us, "
        "and the first kernel-mode access (copy_from_user: io_uring WRITE, process_vm_writev) pays it again even "
        "after user-mode touches, so engines that read host pages in the kernel pay it on every migration. "
        "to_host: medians of both passes per round. memcpy: one thread, between two buffers populated and "
        "copied once beforehand.";
    std::printf("%s\n", report.dump(2).c_str());
    return 0;
}
