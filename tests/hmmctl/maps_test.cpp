// hmmctl maps on a process without uhmm: its mappings from /proc/PID/maps
// with resident, swapped and huge pages from /proc/PID/pagemap, checked
// against what the target filled and against /proc/PID/smaps.
#include <catch2/catch.hpp>

#include <cinttypes>
#include <cstdio>
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

}  // namespace

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
