// See harness.hpp.
#include "harness.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

extern char** environ;

namespace uhmm::preload_test {

namespace {

// The policy every program test runs under: a chaos policy that moves half of
// the managed pages every 20 ms, so that a run of a second or more sees many
// migrations to the device and CPU faults bringing pages back.
constexpr const char* kDefaultChaosConf =
    "policy=chaos,chaos_period_ms=20,chaos_fraction=0.5,seed=1,min_range=64K,"
    "arena=memfd,arena_size=1G,log=error";

constexpr uid_t kNobody = 65534;

std::string env_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
}

bool readable(const std::string& path) { return !path.empty() && ::access(path.c_str(), R_OK) == 0; }

// The variables a run must not inherit from the test's own environment:
// another preload, another configuration, another locale or TMPDIR, and the
// MALLOC_PERTURB_ that meson sets for test binaries (glibc then fills every
// allocation and free: sort runs ten times slower, and the preloaded run,
// whose large blocks are not glibc's, would not be comparable).
bool dropped_from_env(const char* entry) {
    static const char* const kDropped[] = {"LD_PRELOAD=", "UHMM_CONF=", "LC_ALL=", "TMPDIR=",
                                           "MALLOC_PERTURB_="};
    for (const char* prefix : kDropped)
        if (std::strncmp(entry, prefix, std::strlen(prefix)) == 0) return true;
    return false;
}

std::vector<std::string> child_environment(const Command& command, const std::string& dir) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e)
        if (!dropped_from_env(*e)) env.emplace_back(*e);
    env.push_back("LC_ALL=C");
    env.push_back("TMPDIR=" + dir);
    env.insert(env.end(), command.env.begin(), command.env.end());
    return env;
}

// Says why the child could not exec, in its stderr file, and exits 127.
[[noreturn]] void child_fail(const char* what) {
    const int err = errno;
    std::fprintf(stderr, "harness: %s: %s\n", what, std::strerror(err));
    std::fflush(stderr);
    ::_exit(127);
}

bool redirect(const std::string& path, int flags, int target) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    const bool ok = ::dup2(fd, target) == target;   // dup2's copy has no O_CLOEXEC
    ::close(fd);
    return ok;
}

// uid/gid 65534 and no supplementary groups; the kernel drops every
// capability with the uid change, which is what makes userfaultfd refuse.
bool become_nobody() {
    return ::setgroups(0, nullptr) == 0 && ::setresgid(kNobody, kNobody, kNobody) == 0 &&
           ::setresuid(kNobody, kNobody, kNobody) == 0;
}

// In the forked child: own process group (so a timeout kills the whole
// tree), captured output, credentials, then exec. Never returns.
[[noreturn]] void exec_child(const Command& command, const std::string& out, const std::string& err,
                             const std::string& dir, char** argv, char** envp) {
    ::setpgid(0, 0);
    const std::string in = command.stdin_path.empty() ? "/dev/null" : command.stdin_path;
    if (!redirect(err, O_WRONLY | O_CREAT | O_TRUNC, STDERR_FILENO)) ::_exit(127);
    if (!redirect(out, O_WRONLY | O_CREAT | O_TRUNC, STDOUT_FILENO)) child_fail("stdout");
    if (!redirect(in, O_RDONLY, STDIN_FILENO)) child_fail("stdin");
    if (command.as_nobody && !become_nobody()) child_fail("dropping to nobody");
    // After the credential change, which clears it: a test killed by meson's
    // timeout takes its program with it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::chdir(dir.c_str()) != 0) child_fail("chdir");
    ::execve(argv[0], argv, envp);
    child_fail(argv[0]);
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Waits for the child, killing its process group after timeout_s. Fills the
// exit fields of `outcome`.
void wait_child(pid_t pid, int timeout_s, Outcome& outcome) {
    const int pidfd = pidfd_open(pid);
    if (pidfd >= 0) {
        pollfd p{pidfd, POLLIN, 0};
        int r;
        do r = ::poll(&p, 1, timeout_s * 1000);
        while (r < 0 && errno == EINTR);
        if (r == 0) {
            outcome.timed_out = true;
            ::kill(-pid, SIGKILL);
        }
        ::close(pidfd);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    ::kill(-pid, SIGKILL);   // whatever it left running in its group
    if (WIFEXITED(status)) outcome.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) outcome.signal = WTERMSIG(status);
}

// The first difference between two in-memory texts, with the line it is on.
std::string describe_text_difference(const std::string& a, const std::string& b) {
    const auto ia = std::mismatch(a.begin(), a.end(), b.begin(), b.end()).first;
    const auto offset = static_cast<std::size_t>(ia - a.begin());
    const auto line_no = std::count(a.begin(), ia, '\n') + 1;
    auto line_at = [offset](const std::string& s) {
        const std::size_t start = s.rfind('\n', offset == 0 ? 0 : offset - 1);
        const std::size_t from = start == std::string::npos || offset == 0 ? 0 : start + 1;
        return s.substr(from, std::min<std::size_t>(s.find('\n', from) - from, 160));
    };
    return "sizes " + std::to_string(a.size()) + " and " + std::to_string(b.size()) +
           "; first difference at byte " + std::to_string(offset) + ", line " + std::to_string(line_no) +
           ":\n  < " + line_at(a) + "\n  > " + line_at(b);
}

struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

}  // namespace

Inputs read_inputs() {
    Inputs in;
    in.preload = env_or_empty("UHMM_PRELOAD");
    in.source_dir = env_or_empty("UHMM_PRELOAD_TEST_SRC");
    in.workload_threads = env_or_empty("UHMM_WORKLOAD_THREADS");
    in.chaos_conf = env_or_empty("UHMM_PRELOAD_TEST_CONF");
    if (in.chaos_conf.empty()) in.chaos_conf = kDefaultChaosConf;
    if (!readable(in.preload))
        in.problem += "UHMM_PRELOAD must name libuhmm_preload.so (got '" + in.preload + "'). ";
    if (!readable(in.source_dir + "/workload.py"))
        in.problem += "UHMM_PRELOAD_TEST_SRC must name tests/preload (got '" + in.source_dir + "'). ";
    if (::access(in.workload_threads.c_str(), X_OK) != 0)
        in.problem += "UHMM_WORKLOAD_THREADS must name the built workload_threads (got '" +
                      in.workload_threads + "'). ";
    if (!in.problem.empty()) in.problem += "meson test sets these; see tests/preload/README.md.";
    return in;
}

std::string Outcome::describe() const {
    if (pid <= 0) return "could not fork";
    if (timed_out) return "timed out (killed)";
    if (signal != 0) return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
    return "exit " + std::to_string(exit_code);
}

Outcome run(const Command& command, const std::string& dir) {
    Outcome outcome;
    outcome.out_path = dir + "/" + command.label + ".out";
    outcome.err_path = dir + "/" + command.label + ".err";
    std::vector<std::string> args = command.argv;
    std::vector<std::string> env = child_environment(command, dir);
    std::vector<char*> argv = c_strings(args), envp = c_strings(env);
    std::fflush(nullptr);   // the child must not write the test's buffered output again

    const auto start = std::chrono::steady_clock::now();
    outcome.pid = ::fork();
    if (outcome.pid == 0) exec_child(command, outcome.out_path, outcome.err_path, dir, argv.data(), envp.data());
    if (outcome.pid < 0) return outcome;
    wait_child(outcome.pid, command.timeout_s, outcome);
    outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return outcome;
}

Outcome run_preloaded(Command command, const std::string& dir, const std::string& preload,
                      const std::string& conf) {
    command.env.push_back("LD_PRELOAD=" + preload);
    if (!conf.empty()) command.env.push_back("UHMM_CONF=" + conf);   // empty: no UHMM_CONF at all
    return run(command, dir);
}

std::optional<std::string> files_differ(const std::string& a, const std::string& b) {
    File fa(std::fopen(a.c_str(), "rb")), fb(std::fopen(b.c_str(), "rb"));
    if (!fa || !fb) return "cannot open " + (fa ? b : a);
    // Small files (program output) are compared as text, to show the line.
    const auto sa = file_size(a), sb = file_size(b);
    if (sa && sb && *sa < (16u << 20) && *sb < (16u << 20)) {
        const std::string ta = read_file(a), tb = read_file(b);
        if (ta == tb) return std::nullopt;
        return describe_text_difference(ta, tb);
    }
    std::vector<char> ba(1 << 20), bb(1 << 20);
    std::uint64_t offset = 0;
    for (;;) {
        const std::size_t na = std::fread(ba.data(), 1, ba.size(), fa.get());
        const std::size_t nb = std::fread(bb.data(), 1, bb.size(), fb.get());
        const auto ia = std::mismatch(ba.begin(), ba.begin() + static_cast<long>(na), bb.begin(),
                                      bb.begin() + static_cast<long>(nb)).first;
        const auto same = static_cast<std::size_t>(ia - ba.begin());
        if (same < na || na != nb)
            return "sizes " + std::to_string(sa.value_or(0)) + " and " + std::to_string(sb.value_or(0)) +
                   "; first difference at byte " + std::to_string(offset + same);
        if (na == 0) return std::nullopt;
        offset += na;
    }
}

std::string read_file(const std::string& path) {
    File f(std::fopen(path.c_str(), "rb"));
    if (!f) return {};
    std::string text;
    char buf[1 << 16];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f.get())) > 0;) text.append(buf, n);
    return text;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t from = 0;
    while (from < text.size()) {
        std::size_t nl = text.find('\n', from);
        if (nl == std::string::npos) nl = text.size();
        lines.push_back(text.substr(from, nl - from));
        from = nl + 1;
    }
    return lines;
}

std::optional<std::uint64_t> file_size(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return std::nullopt;
    return static_cast<std::uint64_t>(st.st_size);
}

bool copy_file(const std::string& from, const std::string& to, unsigned mode) {
    const std::string bytes = read_file(from);
    File f(std::fopen(to.c_str(), "wb"));
    if (bytes.empty() || !f) return false;
    const bool written = std::fwrite(bytes.data(), 1, bytes.size(), f.get()) == bytes.size();
    return written && ::chmod(to.c_str(), mode) == 0;
}

std::int64_t Stats::get(const std::string& key) const {
    const auto it = values.find(key);
    return it == values.end() ? -1 : it->second;
}

std::string Stats::summary() const {
    std::string s;
    for (const char* key : {"faults", "device_faults", "pages_to_device", "pages_to_host", "migrations",
                            "ranges_managed"})
        s += std::string(s.empty() ? "" : " ") + key + "=" + std::to_string(get(key));
    return s;
}

Stats read_stats(const std::string& dir, pid_t pid) {
    Stats stats;
    const std::string path = dir + "/uhmm-" + std::to_string(pid) + ".json";
    const std::string text = read_file(path);
    if (text.empty()) {
        stats.problem = "no statistics file " + path;
        return stats;
    }
    const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.is_object()) {
        stats.problem = path + " is not a JSON object: " + text.substr(0, 200);
        return stats;
    }
    for (const auto& [key, value] : json.items())
        if (value.is_number_integer()) stats.values[key] = value.get<std::int64_t>();
    for (const char* key : {"pid", "faults", "device_faults", "pages_to_device", "pages_to_host",
                            "migrations", "ranges_managed"})
        if (!stats.values.contains(key)) stats.problem += std::string("no integer '") + key + "'; ";
    if (stats.problem.empty() && stats.get("pid") != pid)
        stats.problem = "pid " + std::to_string(stats.get("pid")) + " in " + path;
    return stats;
}

int count_stats_files(const std::string& dir) {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return 0;
    int n = 0;
    while (const dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        n += name.starts_with("uhmm-") && name.ends_with(".json");
    }
    ::closedir(d);
    return n;
}

std::int64_t sum_over_stats_files(const std::string& dir, const std::string& key) {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return 0;
    std::int64_t total = 0;
    while (const dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (!name.starts_with("uhmm-") || !name.ends_with(".json")) continue;
        const auto pid = std::strtol(name.c_str() + 5, nullptr, 10);
        total += read_stats(dir, static_cast<pid_t>(pid)).get(key);
    }
    ::closedir(d);
    return total;
}

}  // namespace uhmm::preload_test
