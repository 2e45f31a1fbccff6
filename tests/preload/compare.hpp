// What the preload tests share: the setting of one test (inputs, a private
// directory, the configuration and where statistics land), running a program
// natively and preloaded, and comparing the two runs.
#pragma once

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "harness.hpp"

namespace uhmm::preload_test {

// ---- one test's setting -------------------------------------------------------

// The programs come from Debian packages that scripts/deps.sh installs; a
// missing one is a failure that names the package, never a skip.
inline void require_program(const std::string& path, const char* package) {
    INFO(path << " is missing: install the Debian package " << package);
    REQUIRE(::access(path.c_str(), X_OK) == 0);
}

// The inputs from meson, a private directory and the chaos configuration
// whose statistics land in <dir>/stats, one file per process.
struct Setting {
    Inputs in = read_inputs();
    TempDir tmp;
    std::string stats_dir;
    std::string conf;

    Setting() : Setting(std::string{}) {}
    // Under `policy_conf` instead of the chaos configuration.
    explicit Setting(const std::string& policy_conf) {
        INFO(in.problem);
        REQUIRE(in.problem.empty());
        REQUIRE(!tmp.path().empty());
        stats_dir = tmp.file("stats");
        REQUIRE(::mkdir(stats_dir.c_str(), 0755) == 0);
        conf = (policy_conf.empty() ? in.chaos_conf : policy_conf) + ",stats=" + stats_dir + "/uhmm-%p.json";
    }
    std::string src(const std::string& name) const { return in.source_dir + "/" + name; }

    Outcome native(Command c) const {
        c.label += "-native";
        return run(c, tmp.path());
    }
    Outcome preloaded(Command c) const {
        c.label += "-preload";
        return run_preloaded(c, tmp.path(), in.preload, conf);
    }
};

inline std::string tail_of(const std::string& path, std::size_t chars = 3000) {
    const std::string text = read_file(path);
    return text.size() <= chars ? text : "..." + text.substr(text.size() - chars);
}

// Both runs succeeded the same way and printed the same bytes on stdout and
// stderr.
inline void check_same_run(const Outcome& native, const Outcome& preloaded) {
    INFO("native stderr:\n" << tail_of(native.err_path));
    REQUIRE(native.exited_ok());
    INFO("preloaded stderr:\n" << tail_of(preloaded.err_path));
    REQUIRE(preloaded.describe() == native.describe());
    const auto out_diff = files_differ(native.out_path, preloaded.out_path);
    INFO("stdout: " << out_diff.value_or("same"));
    CHECK(!out_diff);
    const auto err_diff = files_differ(native.err_path, preloaded.err_path);
    INFO("stderr: " << err_diff.value_or("same"));
    CHECK(!err_diff);
}

// The program's own statistics (its pid is the one forked here).
inline Stats check_stats_file(const Setting& s, const Outcome& preloaded) {
    Stats stats = read_stats(s.stats_dir, preloaded.pid);
    INFO("statistics: " << stats.problem);
    CHECK(stats.problem.empty());
    return stats;
}

// The policy really moved the program's memory: it migrated pages to the
// device and the program faulted pages back.
inline void check_managed(const Stats& stats) {
    INFO(stats.summary());
    CHECK(stats.get("ranges_managed") > 0);
    CHECK(stats.get("migrations") > 0);
    CHECK(stats.get("faults") > 0);
}

inline void report(const char* what, const Outcome& native, const Outcome& preloaded, const Stats& stats) {
    std::printf("%-24s native %6.2f s, preloaded %6.2f s; %s\n", what, native.seconds, preloaded.seconds,
                stats.summary().c_str());
    std::fflush(stdout);
}

// A program whose whole result is its stdout: run both ways, compare, and
// check the preloaded run's statistics.
inline Stats run_and_compare(const Setting& s, const char* what, const Command& command) {
    const Outcome native = s.native(command);
    const Outcome preloaded = s.preloaded(command);
    check_same_run(native, preloaded);
    Stats stats = check_stats_file(s, preloaded);
    report(what, native, preloaded, stats);
    return stats;
}

// stderr holds exactly one line, the library's, and it contains each of
// `words`.
inline void check_one_uhmm_line(const Outcome& run, const std::vector<std::string>& words) {
    const auto lines = lines_of(read_file(run.err_path));
    INFO("stderr:\n" << read_file(run.err_path));
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].starts_with("uhmm: "));
    for (const auto& w : words) {
        INFO("expected on the line: " << w);
        CHECK(lines[0].find(w) != std::string::npos);
    }
}

// Writes a sysctl and puts the old value back on destruction.
class SysctlOverride {
public:
    SysctlOverride(std::string path, const std::string& value) : path_(std::move(path)) {
        old_ = read_file(path_);
        ok_ = !old_.empty() && write(value);
    }
    ~SysctlOverride() {
        if (!old_.empty()) (void)write(old_);
    }
    SysctlOverride(const SysctlOverride&) = delete;
    SysctlOverride& operator=(const SysctlOverride&) = delete;
    bool ok() const { return ok_; }

private:
    bool write(const std::string& value) const {
        std::FILE* f = std::fopen(path_.c_str(), "w");
        if (f == nullptr) return false;
        const bool put = std::fputs(value.c_str(), f) >= 0;
        return std::fclose(f) == 0 && put;
    }
    std::string path_, old_;
    bool ok_ = false;
};

}  // namespace uhmm::preload_test
