// hmmctl's commands, one file each. main.cpp reads the command line (CLI11)
// into these structs and calls one of them; each returns the exit code or
// throws a Failure (errors.hpp).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hmmctl {

// Options every command takes.
struct Common {
    bool json = false;                          // --json: one JSON object per line on stdout
    std::chrono::milliseconds timeout{10000};   // --timeout: the longest wait for one reply line
};

struct RunOptions {
    std::string arena, arena_size, policy, conf, stats;   // empty: not given
    std::optional<std::string> preload;                   // --preload; none: $UHMM_PRELOAD_LIB or found
    std::vector<std::string> command;                     // CMD and its arguments
};

struct MigrateOptions {
    pid_t pid = 0;
    std::uint64_t addr = 0, len = 0;
    std::string to;   // "device" or "host"
};

struct WatchOptions {
    pid_t pid = 0;
    double interval_s = 1.0;
    unsigned count = 0;   // refreshes before stopping; 0: until interrupted
};

int run_command(const Common& common, const RunOptions& options);
int list_command(const Common& common);
int ranges_command(const Common& common, pid_t pid);
int stat_command(const Common& common, pid_t pid);
int migrate_command(const Common& common, const MigrateOptions& options);
int policy_command(const Common& common, pid_t pid, const std::string& spec);
int maps_command(const Common& common, pid_t pid);
int watch_command(const Common& common, const WatchOptions& options);

}  // namespace hmmctl
