// The preload tests' harness: run a program natively and under
// libuhmm_preload.so in a private temporary directory, capture what it
// prints, compare files, and read the statistics the library writes at exit.
//
// Nothing here throws: failures come back as values (an Outcome's status, a
// difference's description, a Stats's problem) for the test cases to check.
#pragma once

#include "temp_dir.hpp"

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace uhmm::preload_test {

// The environment the tests take from meson (tests/preload/meson.build), or
// the reason it is incomplete.
struct Inputs {
    std::string preload;            // UHMM_PRELOAD: libuhmm_preload.so
    std::string source_dir;         // UHMM_PRELOAD_TEST_SRC: tests/preload (workload.py, workload.sql)
    std::string workload_threads;   // UHMM_WORKLOAD_THREADS: the built workload_threads
    std::string chaos_conf;         // UHMM_PRELOAD_TEST_CONF, else the default chaos policy
    std::string problem;            // empty when everything above is usable
};
Inputs read_inputs();

// mkdtemp under $TMPDIR (or /tmp), removed with everything in it on
// destruction. Empty path() when it could not be made.
// A private directory under $TMPDIR, removed with everything in it.
struct TempDir : test::TempDir {
    TempDir() : test::TempDir("uhmm-preload") {}
};
using test::c_strings;

// One program run.
struct Command {
    Command(std::vector<std::string> argv_, std::string label_, std::string stdin_path_ = {})
        : argv(std::move(argv_)), label(std::move(label_)), stdin_path(std::move(stdin_path_)) {}

    std::vector<std::string> argv;   // argv[0] is an absolute path (no PATH search)
    std::string label;               // names the capture files: <dir>/<label>.out, .err
    std::string stdin_path;          // empty: /dev/null
    std::vector<std::string> env;    // KEY=VALUE added to the cleaned environment
    bool as_nobody = false;          // drop to uid/gid 65534, no groups, before exec
    int timeout_s = 200;             // then the whole process group is killed
};

struct Outcome {
    pid_t pid = -1;
    int exit_code = -1;      // the exit status, when it exited
    int signal = 0;          // the signal that killed it, when it did
    bool timed_out = false;
    double seconds = 0;
    std::string out_path, err_path;
    bool exited_ok() const { return pid > 0 && !timed_out && signal == 0 && exit_code == 0; }
    std::string describe() const;   // "exit 0", "killed by signal 11", "timed out after 300 s"
};

// fork + execve with stdout and stderr captured in `dir`. The child runs in
// its own process group with LC_ALL=C and TMPDIR=dir, and without any
// LD_PRELOAD or UHMM_CONF inherited from the test's own environment.
Outcome run(const Command& command, const std::string& dir);

// The same with LD_PRELOAD=preload and UHMM_CONF=conf added (none when
// `conf` is empty: the library's defaults).
Outcome run_preloaded(Command command, const std::string& dir, const std::string& preload,
                      const std::string& conf);

// nullopt when the two files have the same bytes, else where they differ.
std::optional<std::string> files_differ(const std::string& a, const std::string& b);

std::string read_file(const std::string& path);
std::vector<std::string> lines_of(const std::string& text);
std::optional<std::uint64_t> file_size(const std::string& path);
bool copy_file(const std::string& from, const std::string& to, unsigned mode);

// The statistics file the library writes at exit for one pid.
struct Stats {
    std::map<std::string, std::int64_t> values;   // every integer key in the object
    std::string problem;                          // empty when the file was read and complete
    std::int64_t get(const std::string& key) const;
    std::string summary() const;   // "faults=.. device_faults=.. ..."
};
// Reads <dir>/uhmm-<pid>.json; problem says what was missing or malformed.
Stats read_stats(const std::string& dir, pid_t pid);
// How many uhmm-*.json files `dir` holds (children write their own).
int count_stats_files(const std::string& dir);
// `key` summed over every statistics file in `dir` (all the processes of a
// pipeline or a build).
std::int64_t sum_over_stats_files(const std::string& dir, const std::string& key);

}  // namespace uhmm::preload_test
