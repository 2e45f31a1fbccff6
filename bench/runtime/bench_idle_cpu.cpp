// What the runtime costs a program that is doing nothing: the CPU time of the
// runtime's own threads (uhmm-*) over an idle interval, as a share of one
// core, for each policy. The fault readers (one kept on each CPU by default)
// must sleep while nothing faults; policies with a period (chaos, tier) wake
// for their rounds. The limit is zero; the goal for policy=none is <= 1% of
// a core. Each point first moves half of `size` to the device and touches a
// quarter back, so that the runtime has state to look after, then sleeps.
//
// Prints one JSON object. Arguments (key=value, or UHMM_BENCH_<KEY>):
//   size=64M idle_s=2 policies=none,tier,chaos config=... (extra keys) quick (idle_s=0.5)
#include <dirent.h>

#include <fstream>

#include "common.hpp"

using namespace bench;

namespace {

// CPU time (ns) of this process's threads whose name starts with uhmm-,
// from schedstat (on-CPU time, maintained by the scheduler), and how many.
std::pair<std::uint64_t, int> runtime_threads_cpu_ns() {
    std::uint64_t total = 0;
    int threads = 0;
    DIR* d = ::opendir("/proc/self/task");
    if (!d) return {0, 0};
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        const std::string dir = std::string("/proc/self/task/") + e->d_name;
        std::ifstream comm(dir + "/comm");
        std::string name;
        std::getline(comm, name);
        if (name.rfind("uhmm-", 0) != 0) continue;
        std::ifstream stat(dir + "/schedstat");
        std::uint64_t ns = 0;
        if (stat >> ns) {
            total += ns;
            ++threads;
        }
    }
    ::closedir(d);
    return {total, threads};
}

json idle_point(const std::string& policy, std::size_t size, double idle_s, const std::string& extra) {
    std::string text = "arena=memfd,arena_size=" + arena_size_for(size) + ",policy=" + policy;
    if (policy == "tier") text += ",tier_hot=" + size_text(size / 2);
    if (!extra.empty()) text += "," + extra;
    auto rt = make_runtime(text);
    auto a = rt->allocate(size);
    if (!a) {
        std::fprintf(stderr, "bench: allocate: %s\n", a.error().message().c_str());
        std::exit(1);
    }
    auto* p = static_cast<unsigned char*>(*a);
    std::memset(p, 1, size);
    (void)rt->migrate(p, size / 2, uhmm::Target::device);
    for (std::size_t off = 0; off < size / 4; off += kPage) p[off] += 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));   // let the touches settle

    const auto [cpu0, threads] = runtime_threads_cpu_ns();
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_s));
    const double wall = secs(t0, Clock::now());
    const auto cpu1 = runtime_threads_cpu_ns().first;
    const double share = static_cast<double>(cpu1 - cpu0) / 1e9 / wall;
    const auto s = rt->stats();
    (void)rt->release(p, size);
    return {
        {"policy", policy},
        {"config", rt->config().to_string()},
        {"runtime_threads", threads},
        {"idle_s", round3(wall)},
        {"runtime_cpu_ms", round3(static_cast<double>(cpu1 - cpu0) / 1e6)},
        {"core_share", round6(share)},
        {"core_percent", round3(share * 100)},
        {"policy_rounds", s.policy_rounds},
    };
}

}  // namespace

int main(int argc, char** argv) {
    Args args(argc, argv);
    require_uffd();
    const std::size_t size = args.size("size", "64M", "32M");
    const double idle_s = args.real("idle_s", args.quick() ? "0.5" : "2");
    const std::string extra = args.get("config", "");
    json points = json::array();
    double none_share = -1;
    for (const auto& policy : args.list("policies", "none,tier,chaos")) {
        auto point = idle_point(policy, size, idle_s, extra);
        if (policy == "none") none_share = point["core_share"].get<double>();
        points.push_back(std::move(point));
    }
    json out = {
        {"bench", "runtime_idle_cpu"},
        {"limit", "0 (a runtime that does nothing while nothing faults)"},
        {"points", points},
    };
    if (none_share >= 0) {
        out["policy_none_core_percent"] = round3(none_share * 100);
        out["goal_policy_none_core_percent_max"] = 1.0;
        out["goal_met"] = none_share <= 0.01;
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
}
