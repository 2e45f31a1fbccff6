// hmmctl: the command line of uhmm. It starts programs under the runtime
// (run), talks to running ones over their control sockets (list, ranges,
// stat, migrate, policy, watch; docs/CONTROL.md), and shows any process's
// memory from /proc (maps).
//
// This file only reads the command line (CLI11) into the commands' option
// structs and turns what happens into exit codes: 0 done, 1 the operation
// failed, 2 the command line was wrong (nothing attempted). Messages go to
// stderr as "hmmctl: ...".
#include <CLI/CLI.hpp>

#include <uhmm/runtime.hpp>

#include <cmath>
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "errors.hpp"
#include "numbers.hpp"
#include "printable.hpp"
#include "usage.hpp"

namespace hmmctl {

namespace {

constexpr const char* kDescription =
    "uhmm's command line: run programs under the runtime, and inspect and steer the ones running.\n"
    "Exit status: 0 done, 1 the operation failed, 2 a usage error (nothing was attempted).\n"
    "Each command takes --json for one JSON object per line on stdout.";

// The strings main() reads before they become numbers (ours, for messages
// that name the argument and what it accepts).
struct Raw {
    std::string pid, addr, len, spec, preload;
    double timeout_s = 10;
};

// Seconds from `lo` to `hi`. CLI11's Range would say "Value 0 not in range
// 0.000000 to 1797693134862315708145274237317043567980705675258...": its
// bounds through std::to_string.
CLI::Validator seconds_between(double lo, double hi) {
    auto text = [](double v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%g", v);
        return std::string(buf);
    };
    const std::string range = "between " + text(lo) + " and " + text(hi) + " seconds";
    return CLI::Validator(
        [lo, hi, range](std::string& input) {
            double v = 0;
            if (CLI::detail::lexical_cast(input, v) && v >= lo && v <= hi) return std::string();
            return "must be " + range + ", not '" + input + "'";
        },
        "SECONDS " + range);
}

// --timeout: a reply may take at most an hour (a migration sends progress
// lines as it goes, so this is per line, not per migration).
constexpr double kTimeoutMin = 0.001, kTimeoutMax = 3600;

void add_common(CLI::App* cmd, Common& common, Raw& raw, bool socket) {
    cmd->add_flag("--json", common.json, "print JSON (one object per line) instead of a table");
    if (socket)
        cmd->add_option("--timeout", raw.timeout_s, "seconds to wait for each reply of the process (default 10)")
            ->check(seconds_between(kTimeoutMin, kTimeoutMax));
}

pid_t pid_from(const std::string& text) {
    std::string why;
    const auto pid = parse_pid(text, &why);
    if (!pid) usage_error(why);
    return *pid;
}

std::uint64_t length_from(const std::string& text) {
    std::string why;
    const auto v = parse_length(text, "LEN", &why);
    if (!v) usage_error(why);
    return *v;
}

std::uint64_t address_from(const std::string& text) {
    std::string why;
    const auto v = parse_address(text, "ADDR", &why);
    if (!v) usage_error(why);
    return *v;
}

// What the command line asked for, checked before anything is attempted.
MigrateOptions migrate_options(const Raw& raw, const std::string& to) {
    MigrateOptions m;
    m.pid = pid_from(raw.pid);
    m.addr = address_from(raw.addr);
    m.len = length_from(raw.len);
    m.to = to;
    if (to != "device" && to != "host") usage_error("--to must be device or host, not '" + to + "'");
    if (m.addr % 4096) usage_error("ADDR " + raw.addr + " is not page-aligned (a multiple of 4096)");
    if (m.len == 0) usage_error("LEN is zero: nothing to migrate");
    if (m.len % 4096) usage_error("LEN " + raw.len + " is not a whole number of pages (a multiple of 4096)");
    if (m.addr + m.len < m.addr) usage_error("ADDR + LEN is past the end of the address space (2^64)");
    return m;
}

int parse_and_run(int argc, char** argv) {
    CLI::App app{kDescription, "hmmctl"};
    app.set_version_flag("--version", "hmmctl (uhmm) " + std::string(uhmm::Runtime::version()));
    app.require_subcommand(1);
    Common common;
    Raw raw;
    RunOptions run;
    WatchOptions watch;
    std::string to;

    auto* run_cmd = app.add_subcommand("run", "run CMD under libuhmm_preload.so; a summary on stderr at the end");
    add_common(run_cmd, common, raw, false);
    run_cmd->add_option("--arena", run.arena, "device memory: hugepage, memfd, numa:NODE, cuda:DEVICE");
    run_cmd->add_option("--arena-size", run.arena_size, "most device memory the arena may hold (K/M/G/T)");
    run_cmd->add_option("--policy", run.policy, "placement policy: none, chaos, tier");
    run_cmd->add_option("--conf", run.conf, "more configuration, as UHMM_CONF: key=value,key=value");
    run_cmd->add_option("--stats", run.stats, "also keep the statistics (JSON) in FILE (%p: the process id)");
    auto* preload = run_cmd->add_option("--preload", raw.preload,
                                        "the libuhmm_preload.so to use (default: $UHMM_PRELOAD_LIB, else the one "
                                        "beside hmmctl)");
    run_cmd->add_option("CMD", run.command, "the program and its arguments (after --)")->required();

    auto* list_cmd = app.add_subcommand("list", "processes with a live uhmm runtime");
    add_common(list_cmd, common, raw, true);

    auto* ranges_cmd = app.add_subcommand("ranges", "managed ranges of PID and their pages by state");
    add_common(ranges_cmd, common, raw, true);
    ranges_cmd->add_option("PID", raw.pid, "process id")->required();

    auto* stat_cmd = app.add_subcommand("stat", "counters and latencies of PID's runtime");
    add_common(stat_cmd, common, raw, true);
    stat_cmd->add_option("PID", raw.pid, "process id")->required();

    auto* migrate_cmd = app.add_subcommand("migrate", "move [ADDR, ADDR+LEN) of PID to the device or the host");
    add_common(migrate_cmd, common, raw, true);
    migrate_cmd->add_option("PID", raw.pid, "process id")->required();
    migrate_cmd->add_option("ADDR", raw.addr, "start address, page-aligned (decimal or 0x hex)")->required();
    migrate_cmd->add_option("LEN", raw.len, "length, whole pages (decimal or 0x hex, K/M/G suffixes)")->required();
    migrate_cmd->add_option("--to", to, "device or host")->required();

    auto* policy_cmd = app.add_subcommand("policy", "change PID's placement policy and its knobs now");
    add_common(policy_cmd, common, raw, true);
    policy_cmd->add_option("PID", raw.pid, "process id")->required();
    policy_cmd->add_option("SPEC", raw.spec, "a policy and knobs, e.g. tier,tier_hot=64M or chaos,chaos_fraction=0.5")
        ->required();

    auto* maps_cmd = app.add_subcommand("maps", "PID's mappings with resident, swapped, huge (and device) pages");
    add_common(maps_cmd, common, raw, true);
    maps_cmd->add_option("PID", raw.pid, "process id (any process, with or without uhmm)")->required();

    auto* watch_cmd = app.add_subcommand("watch", "a live view of PID's residency and rates");
    add_common(watch_cmd, common, raw, true);
    watch_cmd->add_option("PID", raw.pid, "process id")->required();
    watch_cmd->add_option("--interval", watch.interval_s, "seconds between refreshes (default 1)")
        ->check(seconds_between(0.05, 3600));
    watch_cmd->add_option("--count", watch.count, "stop after this many refreshes (default: until interrupted)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);   // --help
        usage_error(usage_message(app, e));
    }
    if (preload->count() > 0) run.preload = raw.preload;   // given, even empty (which is refused)
    common.timeout = std::chrono::milliseconds(static_cast<long long>(std::ceil(raw.timeout_s * 1000)));

    if (run_cmd->parsed()) return run_command(common, run);
    if (list_cmd->parsed()) return list_command(common);
    if (ranges_cmd->parsed()) return ranges_command(common, pid_from(raw.pid));
    if (stat_cmd->parsed()) return stat_command(common, pid_from(raw.pid));
    if (migrate_cmd->parsed()) return migrate_command(common, migrate_options(raw, to));
    if (policy_cmd->parsed()) return policy_command(common, pid_from(raw.pid), raw.spec);
    if (maps_cmd->parsed()) return maps_command(common, pid_from(raw.pid));
    watch.pid = pid_from(raw.pid);
    return watch_command(common, watch);
}

}  // namespace

}  // namespace hmmctl

int main(int argc, char** argv) {
    try {
        return hmmctl::parse_and_run(argc, argv);
    } catch (const hmmctl::Failure& f) {
        // Messages quote what processes and users wrote (a command, a
        // server's message): escaped, so that each stays one line.
        std::fflush(stdout);
        std::fprintf(stderr, "hmmctl: %s\n", hmmctl::printable(f.what()).c_str());
        return f.exit_code();
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "hmmctl: %s\n", hmmctl::printable(e.what()).c_str());
        return hmmctl::exit_failed;
    }
}
