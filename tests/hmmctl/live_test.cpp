// hmmctl against a live process: the target (target.cpp) runs under
// `hmmctl run` with its 64 MiB block managed; hmmctl looks at it, moves its
// pages both ways and changes its policy, and the target then checks every
// byte of its block.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <thread>

#include "fixture.hpp"

using namespace uhmm::hmmctl_test;

namespace {

nlohmann::json ranges_of(const Fixture& f, pid_t pid) {
    const Ran r = f.ctl({"ranges", std::to_string(pid), "--json"});
    INFO(r.describe());
    REQUIRE(r.status == 0);
    return r.json();
}

nlohmann::json stat_of(const Fixture& f, pid_t pid) {
    const Ran r = f.ctl({"stat", std::to_string(pid), "--json"});
    INFO(r.describe());
    REQUIRE(r.status == 0);
    REQUIRE(r.json().is_object());
    return r.json();
}

nlohmann::json migrate(const Fixture& f, const Target& t, const char* to) {
    const Ran r = f.ctl({"migrate", std::to_string(t.pid()), hex(t.addr()), std::to_string(t.len()), "--to", to,
                         "--json"});
    INFO(r.describe());
    REQUIRE(r.status == 0);
    REQUIRE(r.json().is_object());
    return r.json();
}

}  // namespace

TEST_CASE("ranges shows the target's block as a managed range of host pages", "[live]") {
    Fixture f;
    auto t = f.managed_target();
    const auto reply = ranges_of(f, t->pid());
    INFO(reply.dump());
    CHECK(u64(reply, "pid") == static_cast<std::uint64_t>(t->pid()));
    const auto r = range_holding(reply, t->addr(), t->len());
    REQUIRE(r.is_object());
    for (const char* key : {"start", "end", "none_pages", "host_pages", "device_pages", "migrating_pages"})
        CHECK(r.contains(key));
    CHECK(u64(r, "host_pages") >= t->pages());
    CHECK(u64(r, "device_pages") == 0);
    CHECK(u64(r, "migrating_pages") == 0);
    CHECK(u64(r, "none_pages") + u64(r, "host_pages") + u64(r, "device_pages") + u64(r, "migrating_pages") ==
          (u64(r, "end") - u64(r, "start")) / 4096);

    const Ran table = f.ctl({"ranges", std::to_string(t->pid())});
    INFO(table.describe());
    CHECK(table.status == 0);
    CHECK(contains(table.out, "DEVICE"));
    CHECK(contains(table.out, hex(u64(r, "start"))));
    CHECK(t->finish("exit 0") == 0);
}

TEST_CASE("migrate --to device moves every page asked and the process reads its data back intact", "[live]") {
    Fixture f;
    auto t = f.managed_target();
    const auto before = stat_of(f, t->pid());

    const auto m = migrate(f, *t, "device");
    INFO(m.dump());
    CHECK(u64(m, "requested_pages") == t->pages());
    CHECK(u64(m, "migrated_pages") == t->pages());
    CHECK(u64(m, "already_pages") == 0);
    CHECK(u64(m, "failed_pages") == 0);
    CHECK(m.contains("seconds"));

    const auto r = range_holding(ranges_of(f, t->pid()), t->addr(), t->len());
    INFO(r.dump());
    CHECK(u64(r, "device_pages") == t->pages());

    const auto moved = stat_of(f, t->pid());
    INFO(moved.dump());
    CHECK(u64(moved, "pages_to_device") - u64(before, "pages_to_device") >= t->pages());
    CHECK(u64(moved, "bytes_to_device") - u64(before, "bytes_to_device") >= t->len());

    // Every page comes home on the CPU's touch, with its bytes.
    CHECK(t->ask("verify") == "OK");
    const auto after = stat_of(f, t->pid());
    INFO(after.dump());
    CHECK(u64(after, "faults") > u64(moved, "faults"));
    CHECK(u64(after, "faults_missing") + u64(after, "faults_wp") > 0);
    CHECK(u64(after, "device_faults") > u64(moved, "device_faults"));
    CHECK(u64(after, "pages_to_host") - u64(moved, "pages_to_host") >= t->pages());
    CHECK(after.contains("fault_p50_ns"));
    CHECK(after.contains("fault_p99_ns"));
    CHECK(after.contains("copy_batches"));
    CHECK(u64(range_holding(ranges_of(f, t->pid()), t->addr(), t->len()), "device_pages") == 0);

    const Ran table = f.ctl({"stat", std::to_string(t->pid())});
    INFO(table.describe());
    CHECK(table.status == 0);
    CHECK(contains(table.out, "faults"));
    CHECK(t->finish("exit 0") == 0);
}

TEST_CASE("hmmctl --version, stat and stat --json name the same uhmm version", "[live]") {
    Fixture f;
    const Ran v = f.ctl({"--version"});
    INFO(v.describe());
    REQUIRE(v.status == 0);
    REQUIRE(v.out.starts_with("hmmctl (uhmm) "));
    std::string version = v.out.substr(std::string("hmmctl (uhmm) ").size());
    while (!version.empty() && version.back() == '\n') version.pop_back();
    CHECK(std::count(version.begin(), version.end(), '.') == 2);
    CHECK(version.find_first_not_of("0123456789.") == std::string::npos);

    auto t = f.managed_target();
    CHECK(stat_of(f, t->pid()).value("version", std::string()) == version);
    const Ran table = f.ctl({"stat", std::to_string(t->pid())});
    INFO(table.describe());
    CHECK(contains(table.out, "uhmm           " + version + "\n"));
    CHECK(t->finish("exit 0") == 0);
}

TEST_CASE("migrate --to host brings device pages home by request", "[live]") {
    Fixture f;
    auto t = f.managed_target();
    (void)migrate(f, *t, "device");
    const auto home = migrate(f, *t, "host");
    INFO(home.dump());
    CHECK(u64(home, "requested_pages") == t->pages());
    CHECK(u64(home, "migrated_pages") == t->pages());
    CHECK(u64(home, "failed_pages") == 0);
    const auto r = range_holding(ranges_of(f, t->pid()), t->addr(), t->len());
    INFO(r.dump());
    CHECK(u64(r, "device_pages") == 0);
    CHECK(u64(r, "host_pages") >= t->pages());

    // Asking again moves nothing: every page is already there.
    const auto again = migrate(f, *t, "host");
    INFO(again.dump());
    CHECK(u64(again, "migrated_pages") == 0);
    CHECK(u64(again, "already_pages") == t->pages());

    const Ran table = f.ctl({"migrate", std::to_string(t->pid()), std::to_string(t->addr()),
                             std::to_string(t->len() / 1024) + "K", "--to", "device"});
    INFO(table.describe());
    CHECK(table.status == 0);
    CHECK(contains(table.out, "migrated"));
    CHECK(contains(table.out, "GB/s"));
    CHECK(t->ask("verify") == "OK");
    CHECK(t->finish("exit 0") == 0);
}

TEST_CASE("policy changes the placement policy while the process runs", "[live]") {
    Fixture f;
    auto t = f.managed_target();
    const std::string pid = std::to_string(t->pid());
    const Ran set = f.ctl({"policy", pid, "chaos,chaos_period_ms=10,chaos_fraction=1", "--json"});
    INFO(set.describe());
    REQUIRE(set.status == 0);
    const auto reply = set.json();
    CHECK(reply.value("policy", "") == "chaos");
    CHECK(reply.value("previous", "") == "none");
    CHECK(contains(reply.value("config", ""), "chaos_period_ms=10"));

    // The chaos policy now moves the idle block to the device by itself (a
    // round is counted once it ends).
    std::uint64_t device = 0, rounds = 0;
    for (int i = 0; i < 100 && (device == 0 || rounds == 0); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        device = u64(range_holding(ranges_of(f, t->pid()), t->addr(), t->len()), "device_pages");
        rounds = u64(stat_of(f, t->pid()), "policy_rounds");
    }
    CHECK(device > 0);
    CHECK(rounds > 0);
    CHECK(stat_of(f, t->pid()).value("policy", "") == "chaos");

    // A bad spec is a usage error and changes nothing.
    const Ran bad = f.ctl({"policy", pid, "chaos,chaos_fraction=2"});
    INFO(bad.describe());
    CHECK(bad.status == 2);
    CHECK(one_message(bad.err, "chaos_fraction"));
    CHECK(stat_of(f, t->pid()).value("policy", "") == "chaos");

    const Ran back = f.ctl({"policy", pid, "none"});
    INFO(back.describe());
    CHECK(back.status == 0);
    CHECK(contains(back.out, "chaos -> none"));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));   // the old thread's last round
    CHECK(t->ask("verify") == "OK");
    // Nothing moves the pages away again.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(u64(range_holding(ranges_of(f, t->pid()), t->addr(), t->len()), "device_pages") == 0);
    CHECK(stat_of(f, t->pid()).value("policy", "") == "none");
    CHECK(t->finish("exit 0") == 0);
}

TEST_CASE("list shows each process with a runtime and forgets the stale sockets", "[live]") {
    Fixture f;
    auto a = f.managed_target(16);
    auto b = f.managed_target(32, "policy=tier,tier_hot=1G");
    // A socket left by a process that is gone (killed by a signal).
    const pid_t gone = unused_pid();
    const std::string stale = f.socket_of(gone);
    REQUIRE(stale_socket(stale));

    const Ran r = f.ctl({"list", "--json"});
    INFO(r.describe());
    REQUIRE(r.status == 0);
    const auto processes = r.json().value("processes", nlohmann::json::array());
    auto entry = [&](pid_t pid) {
        for (const auto& p : processes)
            if (u64(p, "pid") == static_cast<std::uint64_t>(pid)) return p;
        return nlohmann::json();
    };
    for (const auto* t : {a.get(), b.get()}) {
        const auto p = entry(t->pid());
        INFO("pid " << t->pid());
        REQUIRE(p.is_object());
        CHECK(contains(p.value("command", ""), "target"));
        CHECK(u64(p, "managed_bytes") >= t->len());
        CHECK(p.contains("device_bytes"));
    }
    CHECK(entry(a->pid()).value("policy", "") == "none");
    CHECK(entry(b->pid()).value("policy", "") == "tier");
    CHECK(entry(gone).is_null());
    CHECK(::access(stale.c_str(), F_OK) != 0);   // removed

    const Ran table = f.ctl({"list"});
    INFO(table.describe());
    CHECK(table.status == 0);
    CHECK(contains(table.out, std::to_string(a->pid())));
    CHECK(contains(table.out, std::to_string(b->pid())));
    CHECK(a->finish("exit 0") == 0);
    CHECK(b->finish("exit 0") == 0);
}

TEST_CASE("watch prints one sample per refresh with residency and rates", "[live]") {
    Fixture f;
    auto t = f.managed_target();
    const std::string pid = std::to_string(t->pid());
    const Ran r = f.ctl({"watch", pid, "--count", "3", "--interval", "0.2", "--json"});
    INFO(r.describe());
    REQUIRE(r.status == 0);
    const auto lines = [&] {
        std::vector<nlohmann::json> out;
        std::size_t at = 0;
        while (at < r.out.size()) {
            const auto nl = r.out.find('\n', at);
            out.push_back(nlohmann::json::parse(r.out.substr(at, nl - at), nullptr, false));
            at = nl == std::string::npos ? r.out.size() : nl + 1;
        }
        return out;
    }();
    REQUIRE(lines.size() == 3);
    for (const auto& l : lines) {
        REQUIRE(l.is_object());
        CHECK(u64(l["residency"], "host_pages") >= t->pages());
        CHECK(l["stat"].contains("faults"));
    }
    CHECK(lines[2]["rates"].contains("pages_to_device"));

    const Ran table = f.ctl({"watch", pid, "--count", "1"});
    INFO(table.describe());
    CHECK(table.status == 0);
    CHECK(contains(table.out, "residency"));
    CHECK(t->finish("exit 0") == 0);
}

TEST_CASE("maps shows the device pages of a process that runs uhmm", "[live]") {
    Fixture f;
    auto t = f.managed_target();
    (void)migrate(f, *t, "device");
    const Ran r = f.ctl({"maps", std::to_string(t->pid()), "--json"});
    INFO(r.describe());
    REQUIRE(r.status == 0);
    const auto j = r.json();
    CHECK(j.value("uhmm", false));
    CHECK(u64(j, "device_pages") == t->pages());
    for (const auto& m : j["mappings"]) {
        if (u64(m, "start") <= t->addr() && t->addr() < u64(m, "end")) {
            CHECK(u64(m, "device_pages") == t->pages());
            // Zapped: the block's pages are on the device, not resident.
            CHECK(u64(m, "resident_pages") <= (u64(m, "end") - u64(m, "start")) / 4096 - t->pages());
        }
    }
    CHECK(t->ask("verify") == "OK");
    CHECK(t->finish("exit 0") == 0);
}

TEST_CASE("a command line with a newline or an escape sequence stays one line in list, watch and stat", "[live]") {
    Fixture f;
    const std::string raw = "first line\nsecond\x1b[2J";
    const std::string shown = "first line\\nsecond\\x1b[2J";
    auto t = f.managed_target(16, "", {raw});
    const std::string pid = std::to_string(t->pid());
    auto one_line_with = [&](const Ran& r, const std::string& start) {
        INFO(r.describe());
        CHECK(r.status == 0);
        CHECK_FALSE(contains(r.out, "\x1b"));
        std::istringstream lines(r.out);
        std::string line;
        bool found = false;
        while (std::getline(lines, line)) {
            line.erase(0, line.find_first_not_of(' '));   // PID is right-aligned
            CHECK(line.rfind("second", 0) != 0);           // no row broken in two
            if (line.rfind(start, 0) == 0 && contains(line, shown)) found = true;
        }
        CHECK(found);
    };
    one_line_with(f.ctl({"list"}), pid + " ");
    one_line_with(f.ctl({"watch", pid, "--count", "1"}), "process " + pid + ": ");
    one_line_with(f.ctl({"stat", pid}), "process " + pid + ": ");

    // JSON is for programs: the exact text, escaped the JSON way.
    const Ran j = f.ctl({"list", "--json"});
    INFO(j.describe());
    bool exact = false;
    for (const auto& p : j.json().value("processes", nlohmann::json::array()))
        if (u64(p, "pid") == static_cast<std::uint64_t>(t->pid())) exact = contains(p.value("command", ""), raw);
    CHECK(exact);
    CHECK(t->finish("exit 0") == 0);
}
