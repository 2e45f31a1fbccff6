// hmmctl run: the configuration checked before anything runs, CMD's exit
// status passed on, and the summary of what the runtime did.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
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

TEST_CASE("hmmctl run --preload and UHMM_PRELOAD_LIB name the library for a relocated hmmctl", "[run]") {
    Fixture f;
    ::unsetenv("UHMM_PRELOAD_LIB");   // ours to set, case by case
    // hmmctl alone in a directory: no build tree or libdir beside it.
    TempDir away("uhmm-hmmctl-away");
    const std::string hmmctl = away.file("hmmctl");
    std::filesystem::copy_file(f.inputs().hmmctl, hmmctl);
    REQUIRE(::chmod(hmmctl.c_str(), 0755) == 0);
    REQUIRE(::mkdir(away.file("lib").c_str(), 0700) == 0);
    const std::string lib = away.file("lib/uhmm-copy.so");
    std::filesystem::copy_file(f.inputs().preload, lib);
    const std::string missing = away.file("nonexistent.so");
    const std::string marker = away.file("marker");
    auto run = [&](std::vector<std::string> options, std::vector<std::string> env, std::vector<std::string> cmd) {
        options.insert(options.begin(), {hmmctl, "run", "--arena", "memfd"});
        options.push_back("--");
        options.insert(options.end(), cmd.begin(), cmd.end());
        RunOptions o;
        o.env = std::move(env);
        return uhmm::hmmctl_test::run(options, o);
    };
    // CMD prints the LD_PRELOAD it got: the library first, by its absolute path.
    const std::vector<std::string> show = {"/bin/sh", "-c", "echo \"$LD_PRELOAD\""};
    auto preloaded = [&](const Ran& r) {
        INFO(r.describe());
        CHECK(r.status == 0);
        CHECK(r.out == lib + "\n");
    };

    preloaded(run({"--preload", lib}, {}, show));
    preloaded(run({}, {"UHMM_PRELOAD_LIB=" + lib}, show));
    preloaded(run({"--preload", lib}, {"UHMM_PRELOAD_LIB=" + missing}, show));   // the option wins

    // The copy is the runtime: the target's statistics come back in the summary.
    const Ran managed = run({"--json", "--preload", lib}, {}, {f.inputs().target, "16"});
    INFO(managed.describe());
    CHECK(managed.status == 0);
    CHECK(contains(managed.out, "READY"));
    const auto last_line = managed.err.substr(managed.err.rfind('\n', managed.err.size() - 2) + 1);
    const auto summary = nlohmann::json::parse(last_line, nullptr, false);
    CHECK(summary.value("processes", 0) == 1);
    CHECK(summary["stats"].is_object());

    // A path that is no readable file: one line naming it and where it came
    // from, exit 1, CMD never started. (As root every file is readable, so
    // "unreadable" is not checked here.)
    auto refused = [&](const Ran& r, const std::string& message) {
        INFO(r.describe());
        CHECK(r.status == 1);
        CHECK(one_message(r.err, message));
        CHECK(::access(marker.c_str(), F_OK) != 0);
    };
    const std::vector<std::string> touch = {"/usr/bin/touch", marker};
    refused(run({"--preload", missing}, {"UHMM_PRELOAD_LIB=" + lib}, touch), "--preload " + missing + ": No such file");
    refused(run({}, {"UHMM_PRELOAD_LIB=" + missing}, touch), "UHMM_PRELOAD_LIB " + missing + ": No such file");
    refused(run({"--preload", away.path()}, {}, touch), "is not a regular file");
    refused(run({"--preload", ""}, {"UHMM_PRELOAD_LIB=" + lib}, touch), "--preload is empty");
    const std::string spaced = away.file("lib/with space.so");
    std::filesystem::copy_file(f.inputs().preload, spaced);
    refused(run({"--preload", spaced}, {}, touch), "LD_PRELOAD splits paths at spaces and colons");

    // Neither, and nothing beside hmmctl: where it looked, and how to say where.
    const char* libdir = std::getenv("UHMM_INSTALL_LIBDIR");   // meson's prefix/libdir (tests/hmmctl/meson.build)
    const std::string installed = std::string(libdir ? libdir : "") + "/libuhmm_preload.so";
    if (!libdir || ::access(installed.c_str(), F_OK) == 0) {
        WARN(installed << " is installed (or UHMM_INSTALL_LIBDIR unset): 'not found' not checked");
    } else {
        const Ran none = run({}, {}, touch);
        INFO(none.describe());
        CHECK(none.status == 1);
        CHECK(one_message(none.err, "cannot find libuhmm_preload.so"));
        CHECK(contains(none.err, "--preload PATH or UHMM_PRELOAD_LIB"));
        CHECK(::access(marker.c_str(), F_OK) != 0);
    }

    const Ran help = f.ctl({"run", "--help"});
    INFO(help.describe());
    CHECK(help.status == 0);
    CHECK(contains(help.out, "--preload"));
    CHECK(contains(help.out, "UHMM_PRELOAD_LIB"));
}
