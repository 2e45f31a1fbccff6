// hmmctl maps on a process without uhmm: its mappings from /proc/PID/maps
// with resident, swapped and huge pages from /proc/PID/pagemap, checked
// against what the target filled and against /proc/PID/smaps; and on a
// kernel thread, which has none.
#include <catch2/catch.hpp>

#include <dirent.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "fixture.hpp"

using namespace uhmm::hmmctl_test;

namespace {

// AnonHugePages (kB) of the mapping that starts at `start`, from smaps.
std::uint64_t anon_huge_kb(pid_t pid, std::uint64_t start) {
    std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/smaps"));
    std::string line;
    bool inside = false;
    while (std::getline(in, line)) {
        std::uint64_t a = 0, b = 0, kb = 0;
        if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64 " ", &a, &b) == 2) {
            inside = a == start;
            continue;
        }
        if (inside && std::sscanf(line.c_str(), "AnonHugePages: %" SCNu64 " kB", &kb) == 1) return kb;
    }
    return 0;
}

// A kernel thread's pid (PF_KTHREAD in /proc/PID/stat): kthreadd's, 2, when
// it is one, else the first found; -1 when none is visible (a container's
// pid namespace shows none).
pid_t kernel_thread() {
    auto is_kthread = [](pid_t pid) {
        const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
        const auto close = stat.rfind(')');
        if (close == std::string::npos) return false;
        std::istringstream fields(stat.substr(close + 1));
        std::string skip;
        unsigned long flags = 0;
        for (int i = 0; i < 6; ++i) fields >> skip;   // state ppid pgrp session tty tpgid
        return static_cast<bool>(fields >> flags) && (flags & 0x00200000) != 0;
    };
    if (is_kthread(2)) return 2;
    pid_t found = -1;
    if (DIR* d = ::opendir("/proc")) {
        while (const dirent* e = ::readdir(d)) {
            const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
            if (pid > 0 && is_kthread(pid)) {
                found = pid;
                break;
            }
        }
        ::closedir(d);
    }
    return found;
}

}  // namespace

TEST_CASE("maps of a kernel thread says it has no user mappings (exit 0)", "[maps]") {
    Fixture f;
    const pid_t pid = kernel_thread();
    if (pid < 0) {
        WARN("no kernel thread is visible in this pid namespace: not checked");
        return;
    }
    const std::string p = std::to_string(pid);
    const Ran r = f.ctl({"maps", p});
    INFO(r.describe());
    CHECK(r.status == 0);
    CHECK(r.err.empty());
    CHECK(contains(r.out, "process " + p + " ("));
    CHECK(contains(r.out, "is a kernel thread: it has no user mappings"));
    CHECK_FALSE(contains(r.out, "no process"));

    const Ran j = f.ctl({"maps", p, "--json"});
    INFO(j.describe());
    CHECK(j.status == 0);
    const auto reply = j.json();
    CHECK(reply.value("kernel_thread", false));
    CHECK(reply.value("uhmm", true) == false);
    CHECK(reply["mappings"].is_array());
    CHECK(reply["mappings"].empty());
    CHECK(u64(reply, "pid") == static_cast<std::uint64_t>(pid));
}

TEST_CASE("maps shows any process's mappings with resident and swapped and huge pages", "[maps]") {
    Fixture f;
    auto t = f.plain_target(16, true);
    const Ran r = f.ctl({"maps", std::to_string(t->pid()), "--json"});
    INFO(r.describe());
    REQUIRE(r.status == 0);
    const auto j = r.json();
    REQUIRE(j.is_object());
    CHECK(j.value("uhmm", true) == false);
    CHECK_FALSE(j.contains("device_pages"));
    nlohmann::json block;
    for (const auto& m : j["mappings"])
        if (u64(m, "start") <= t->addr() && t->addr() < u64(m, "end")) block = m;
    INFO(block.dump());
    REQUIRE(block.is_object());
    CHECK(u64(block, "end") >= t->addr() + t->len());
    CHECK(block.value("perms", "") == "rw-p");
    CHECK(u64(block, "resident_pages") >= t->pages());   // the target filled every page
    CHECK(u64(block, "swapped_pages") == 0);
    REQUIRE(block["huge_pages"].is_number());
    CHECK(u64(block, "huge_pages") * 4 == anon_huge_kb(t->pid(), u64(block, "start")));
    CHECK(u64(j, "resident_pages") >= t->pages());

    const Ran table = f.ctl({"maps", std::to_string(t->pid())});
    INFO(table.describe());
    CHECK(table.status == 0);
    CHECK(contains(table.out, "RSS"));
    CHECK(contains(table.out, "[stack]"));
    CHECK_FALSE(contains(table.out, "DEVICE"));
    CHECK(t->ask("verify") == "OK");
}
