// The hmmctl tests' harness: run the real hmmctl binary and capture what it
// prints and how it exits; start the target program (target.cpp) and talk
// to it over its stdin and stdout while it runs; open the control socket
// directly for the protocol cases.
//
// Nothing here throws: failures come back as values for the cases to check.
#pragma once

#include "temp_dir.hpp"

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace uhmm::hmmctl_test {

// What meson passes (tests/hmmctl/meson.build), or why it is incomplete.
struct Inputs {
    std::string hmmctl;    // UHMM_HMMCTL: the built hmmctl
    std::string target;    // UHMM_HMMCTL_TARGET: the built target
    std::string preload;   // UHMM_PRELOAD: libuhmm_preload.so
    std::string problem;   // empty when all are usable
};
Inputs read_inputs();

// mkdtemp under $TMPDIR (or /tmp), removed with its contents on destruction.
// A private directory under $TMPDIR, removed with everything in it.
struct TempDir : test::TempDir {
    explicit TempDir(const std::string& prefix = "uhmm-hmmctl") : test::TempDir(prefix) {}
};
using test::c_strings;

// One finished program run.
struct Ran {
    int status = -1;   // exit status, or 128 + signal
    bool timed_out = false;
    std::string out, err;
    std::string describe() const;   // for failure messages: status, stdout and stderr
    // stdout as one JSON value (the first line); discarded when it is not JSON.
    nlohmann::json json() const;
};

struct RunOptions {
    std::vector<std::string> env;   // KEY=VALUE added
    int timeout_s = 120;
};

// fork + execv (argv[0] an absolute path), stdin /dev/null, stdout and
// stderr captured. The child has no LD_PRELOAD, UHMM_CONF or
// MALLOC_PERTURB_ from the test's environment; UHMM_RUNTIME_DIR is kept.
Ran run(const std::vector<std::string>& argv, const RunOptions& options = {});

// A running target: its stdin and stdout are ours; stderr goes to a file.
// Destroyed, it gets the end of its input (and exits), or is killed after
// 10 s.
class Target {
public:
    Target(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& err_path);
    ~Target();
    Target(const Target&) = delete;
    Target& operator=(const Target&) = delete;

    // Waits for the READY line (the block filled); false after timeout_s.
    bool ready(int timeout_s = 60);
    pid_t pid() const { return pid_; }                  // the target's own pid (from READY)
    pid_t launched() const { return child_; }           // what we started (hmmctl run, or the target)
    std::uint64_t addr() const { return addr_; }
    std::uint64_t len() const { return len_; }
    std::uint64_t pages() const { return len_ / 4096; }
    bool alive() const;

    // One command line, one answer line ("" on timeout or end of output).
    std::string ask(const std::string& command, int timeout_s = 60);
    // Sends `command` (e.g. "exit 3"; "" sends nothing), closes stdin and
    // waits for the process we started (hmmctl run, or the target itself):
    // its exit status, or 128 + signal; -1 on timeout.
    int finish(const std::string& command, int timeout_s = 60);
    std::string stderr_text() const;
    const std::string& last_line() const { return last_; }

private:
    std::string read_line(int timeout_s);

    pid_t child_ = -1;   // what we forked
    pid_t pid_ = -1;
    std::uint64_t addr_ = 0, len_ = 0;
    int in_ = -1, out_ = -1;
    std::string buffer_, err_path_, last_;
};

// A raw connection to a control socket.
class Raw {
public:
    explicit Raw(const std::string& socket_path);
    ~Raw();
    Raw(const Raw&) = delete;
    Raw& operator=(const Raw&) = delete;
    bool connected() const { return fd_ >= 0; }
    int connect_errno() const { return connect_errno_; }
    bool send(const std::string& bytes);
    // One reply line; nullopt on timeout or when the server closed.
    std::optional<std::string> line(int timeout_s = 10);
    // Whether the server closed the connection within timeout_s (what it
    // still sends before closing is read and dropped).
    bool closed_by_server(int timeout_s = 10);
    int fd() const { return fd_; }

private:
    int fd_ = -1;
    int connect_errno_ = 0;
    std::string buffer_;
};

// A Unix socket bound at `path`: its descriptor (the caller's to listen on and
// close), or -1.
int bound_socket(const std::string& path);
// A Unix socket bound at `path` that nobody listens on (what a process killed
// by a signal leaves behind); whether it was made.
bool stale_socket(const std::string& path);

std::string read_file(const std::string& path);
bool contains(const std::string& text, const std::string& what);
// A pid that no process has now.
pid_t unused_pid();

}  // namespace uhmm::hmmctl_test
