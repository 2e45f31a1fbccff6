// hmmctl run: the configuration checked before anything runs, CMD's exit
// status passed on, and the summary of what the runtime did.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>

#include "fixture.hpp"

using namespace uhmm::hmmctl_test;

TEST_CASE("hmmctl run returns the command's exit status and sums up what moved", "[run]") {
    Fixture f;
    auto t = f.managed_target();
    const Ran m = f.ctl({"migrate", std::to_string(t->pid()), hex(t->addr()), std::to_string(t->len()), "--to",
                         "device"});
    INFO(m.describe());
    REQUIRE(m.status == 0);
    CHECK(t->ask("verify") == "OK");
    CHECK(t->finish("exit 3") == 3);
    const std::string summary = t->stderr_text();
    INFO(summary);
    CHECK(contains(summary, "exited with status 3"));
    CHECK(contains(summary, "to device"));
    CHECK(contains(summary, "faults"));
    CHECK(contains(summary, "arena"));
    // "  to device      16384 pages (64.0 MiB)": at least the block went there.
    unsigned long to_device = 0;
    const auto at = summary.find("to device");
    REQUIRE(at != std::string::npos);
    CHECK(std::sscanf(summary.c_str() + at, "to device %lu pages", &to_device) == 1);
    CHECK(to_device >= t->pages());
}

TEST_CASE("hmmctl run --json puts the summary as one JSON object on stderr", "[run]") {
    Fixture f;
    const std::string stats = f.dir().file("stats-%p.json");
    const std::string err = f.dir().file("json-run.err");
    Target t({f.inputs().hmmctl, "run", "--json", "--arena", "memfd", "--arena-size", "256M", "--policy", "chaos",
              "--conf", "chaos_period_ms=10,chaos_fraction=1,log=error", "--stats", stats, "--",
              f.inputs().target, "32"},
             {}, err);
    REQUIRE(t.ready());
    CHECK(t.ask("verify") == "OK");
    CHECK(t.finish("exit 0") == 0);
    const std::string text = read_file(err);
    INFO(text);
    const auto last = text.substr(text.rfind('\n', text.size() - 2) + 1);
    const auto j = nlohmann::json::parse(last, nullptr, false);
    REQUIRE(j.is_object());
    CHECK(u64(j, "exit_status") == 0);
    CHECK(u64(j, "pid") == static_cast<std::uint64_t>(t.pid()));
    CHECK(j["stats"].value("policy", "") == "chaos");
    CHECK(u64(j["stats"], "pages_to_device") > 0);
    // --stats keeps the file, %p expanded.
    std::string kept = stats;
    kept.replace(kept.find("%p"), 2, std::to_string(t.pid()));
    CHECK(nlohmann::json::parse(read_file(kept), nullptr, false).contains("faults"));
}

TEST_CASE("hmmctl run refuses a bad configuration before running anything", "[run]") {
    Fixture f;
    const std::string marker = f.dir().file("marker");
    const std::vector<std::vector<std::string>> bad = {
        {"--conf", "nosuchkey=1"},
        {"--policy", "bogus"},
        {"--arena-size", "3X"},
        {"--arena", "memfd", "--conf", "arena=memfd"},   // given twice
        {"--conf", "chaos_fraction=2"},
        {"--conf", "stats=/x", "--stats", "/y"},
    };
    for (const auto& options : bad) {
        std::vector<std::string> args{"run"};
        args.insert(args.end(), options.begin(), options.end());
        args.insert(args.end(), {"--", "/usr/bin/touch", marker});
        const Ran r = f.ctl(args);
        INFO(r.describe());
        CHECK(r.status == 2);
        CHECK(one_message(r.err, "bad configuration"));
        CHECK(::access(marker.c_str(), F_OK) != 0);
    }
    const Ran no_cmd = f.ctl({"run", "--policy", "none"});
    INFO(no_cmd.describe());
    CHECK(no_cmd.status == 2);
}

TEST_CASE("hmmctl run: a command that cannot start or dies of a signal", "[run]") {
    Fixture f;
    const Ran missing = f.ctl({"run", "--", "/nonexistent/program"});
    INFO(missing.describe());
    CHECK(missing.status == 127);
    CHECK(one_message(missing.err, "cannot run /nonexistent/program"));

    const Ran killed = f.ctl({"run", "--arena", "memfd", "--", "/bin/sh", "-c", "kill -TERM $$"});
    INFO(killed.describe());
    CHECK(killed.status == 128 + 15);
    CHECK(contains(killed.err, "killed by signal 15"));

    const Ran plain = f.ctl({"run", "--arena", "memfd", "--", "/bin/sh", "-c", "exit 0"});
    INFO(plain.describe());
    CHECK(plain.status == 0);
    CHECK(contains(plain.err, "exited with status 0"));
}

TEST_CASE("hmmctl run passes SIGTERM on to the command and cleans up after it", "[run]") {
    Fixture f;
    const std::string tmp = f.dir().file("tmp");
    REQUIRE(::mkdir(tmp.c_str(), 0700) == 0);
    const std::string err = f.dir().file("term.err");
    Target t({f.inputs().hmmctl, "run", "--arena", "memfd", "--arena-size", "256M", "--", f.inputs().target, "16"},
             {"TMPDIR=" + tmp}, err);
    REQUIRE(t.ready());
    CHECK(t.ask("verify") == "OK");
    REQUIRE(::kill(t.launched(), SIGTERM) == 0);
    CHECK(t.finish("") == 128 + SIGTERM);
    const std::string summary = read_file(err);
    INFO(summary);
    CHECK(contains(summary, "killed by signal 15"));
    CHECK(std::filesystem::is_empty(tmp));   // the statistics' directory is gone
}
