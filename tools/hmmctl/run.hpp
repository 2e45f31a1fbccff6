// hmmctl run's parts: which libuhmm_preload.so CMD gets, and the summary
// printed when the program ends.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace hmmctl {

// libuhmm_preload.so next to this hmmctl: in the build tree
// (<build>/lib/preload/, hmmctl being <build>/tools/hmmctl/hmmctl) or
// installed (the libdir beside hmmctl's bindir, then the configured libdir).
// An absolute path, or nullopt with the places looked in, in `*looked`.
std::optional<std::string> find_preload_library(std::string* looked);
// The library CMD gets: `option` (--preload) when given, else
// $UHMM_PRELOAD_LIB when set and not empty, else find_preload_library(). A named one must
// be a readable regular file. An absolute path, since LD_PRELOAD is read by
// every program CMD starts, in whatever directory; a Failure (exit 1) that
// names the path and where it came from otherwise.
std::string preload_library(const std::optional<std::string>& option);

// How the program ended and what the runtime counted, for the summary.
struct RunEnd {
    std::vector<std::string> command;
    pid_t pid = -1;
    int exit_status = 0;   // what hmmctl returns: the status, or 128 + the signal
    int signal = 0;
    double seconds = 0;
    std::vector<nlohmann::json> stats;   // one object per process that wrote its statistics
};

// The statistics files: `pattern` is stats= with %p; files_in_dir names a
// directory of our own whose every uhmm-*.json is read (children too).
std::vector<nlohmann::json> read_stats(const std::string& pattern, pid_t pid, const std::string& files_in_dir);
// The summary on stderr (JSON with `json`).
void print_summary(const RunEnd& end, bool json);

}  // namespace hmmctl
