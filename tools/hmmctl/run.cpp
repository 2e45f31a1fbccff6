// hmmctl run [options] -- CMD [ARG...]: CMD under libuhmm_preload.so.
//
// The configuration (--conf, then --arena, --arena-size, --policy, then
// stats=) is parsed here with the runtime's own parser before anything runs:
// a bad key or value is a usage error (exit 2) and CMD never starts. Unless
// the caller keeps the statistics (--stats, or stats= in --conf), they go to
// a private directory, read for the summary and removed.
//
// CMD gets LD_PRELOAD (ours first) and UHMM_CONF; an UHMM_CONF inherited from
// the environment is replaced. hmmctl ignores SIGINT and SIGQUIT while CMD
// runs, as system(3) does: Ctrl-C reaches CMD, and the summary still comes.
// SIGTERM and SIGHUP it passes on to CMD, for the same reason.
// hmmctl returns CMD's exit status, 128 + the signal that killed it, or, as
// env(1) does, 127 (not found) / 126 (not executable) when it could not start.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <uhmm/runtime.hpp>

#include "commands.hpp"
#include "errors.hpp"
#include "run.hpp"

extern char** environ;

namespace hmmctl {

namespace {

// The whole configuration CMD runs with; usage_error when it does not parse.
std::string configuration(const RunOptions& o, const std::string& default_stats) {
    std::string conf = o.conf;
    auto add = [&](const char* key, const std::string& value) {
        if (!value.empty()) conf += (conf.empty() ? "" : ",") + std::string(key) + "=" + value;
    };
    add("arena", o.arena);
    add("arena_size", o.arena_size);
    add("policy", o.policy);
    add("stats", o.stats);
    std::string why;
    auto parsed = uhmm::RuntimeConfig::parse(conf, &why);
    if (!parsed) {
        if (why.rfind("UHMM_CONF: ", 0) == 0) why.erase(0, 11);
        usage_error("bad configuration: " + why);
    }
    if (parsed->stats.empty()) add("stats", default_stats);
    return conf;
}

// A private directory for the statistics, removed on destruction.
class StatsDir {
public:
    StatsDir() {
        const char* tmp = std::getenv("TMPDIR");
        std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/hmmctl-run-XXXXXX";
        if (::mkdtemp(templ.data()) == nullptr) fail("cannot make a directory for the statistics: " + templ);
        path_ = templ;
    }
    ~StatsDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    StatsDir(const StatsDir&) = delete;
    StatsDir& operator=(const StatsDir&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

std::vector<std::string> environment(const std::string& preload, const std::string& conf) {
    std::vector<std::string> env;
    std::string preloads = preload;
    for (char** e = environ; *e; ++e) {
        if (std::strncmp(*e, "LD_PRELOAD=", 11) == 0) {
            if ((*e)[11]) preloads += std::string(":") + (*e + 11);
        } else if (std::strncmp(*e, "UHMM_CONF=", 10) != 0) {
            env.emplace_back(*e);
        }
    }
    env.push_back("LD_PRELOAD=" + preloads);
    env.push_back("UHMM_CONF=" + conf);
    return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (auto& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

// What hmmctl does with signals while CMD runs: SIGINT and SIGQUIT are
// ignored (the terminal sends them to CMD too), SIGTERM and SIGHUP are
// passed on to CMD; either way hmmctl outlives CMD to sum up and clean up.
// The old actions come back with restore() (in CMD before exec, too).
std::atomic<pid_t> forward_to{0};
extern "C" void forward_signal(int sig) {
    if (const pid_t pid = forward_to.load(); pid > 0) ::kill(pid, sig);
}

class SignalGuard {
public:
    SignalGuard() {
        struct sigaction ign{}, fwd{};
        ign.sa_handler = SIG_IGN;
        fwd.sa_handler = forward_signal;
        for (std::size_t i = 0; i < 4; ++i) ::sigaction(kSignals[i], i < 2 ? &ign : &fwd, &old_[i]);
    }
    ~SignalGuard() { restore(); }
    SignalGuard(const SignalGuard&) = delete;
    SignalGuard& operator=(const SignalGuard&) = delete;
    void restore() {
        for (std::size_t i = 0; i < 4; ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
    }

private:
    static constexpr int kSignals[4] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP};
    struct sigaction old_[4]{};
};

// fork + execvp with `env`; the exec's errno comes back through a pipe, so
// that "could not start" is told apart from CMD's own exit status 127.
pid_t start(std::vector<std::string> argv, std::vector<std::string> env, SignalGuard& signals) {
    int report[2];
    if (::pipe2(report, O_CLOEXEC) != 0) fail(std::string("pipe: ") + std::strerror(errno));
    auto args = c_strings(argv);
    auto envp = c_strings(env);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) fail(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        signals.restore();
        ::close(report[0]);
        environ = envp.data();
        ::execvp(args[0], args.data());
        const int err = errno;
        (void)!::write(report[1], &err, sizeof err);
        ::_exit(127);
    }
    ::close(report[1]);
    int err = 0;
    ssize_t n;
    do n = ::read(report[0], &err, sizeof err);
    while (n < 0 && errno == EINTR);
    ::close(report[0]);
    if (n == sizeof err) {
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {}
        throw Failure(err == ENOENT ? 127 : 126, "cannot run " + argv[0] + ": " + std::strerror(err));
    }
    return pid;
}

}  // namespace

int run_command(const Common& common, const RunOptions& o) {
    StatsDir dir;
    const std::string conf = configuration(o, dir.path() + "/uhmm-%p.json");
    const std::string preload = preload_library(o.preload);

    RunEnd end;
    end.command = o.command;
    SignalGuard signals;
    const auto t0 = std::chrono::steady_clock::now();
    end.pid = start(o.command, environment(preload, conf), signals);
    forward_to.store(end.pid);
    int status = 0;
    while (::waitpid(end.pid, &status, 0) < 0) {
        if (errno != EINTR) fail(std::string("waitpid: ") + std::strerror(errno));
    }
    end.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    forward_to.store(0);
    signals.restore();
    if (WIFSIGNALED(status)) {
        end.signal = WTERMSIG(status);
        end.exit_status = 128 + end.signal;
    } else {
        end.exit_status = WEXITSTATUS(status);
    }
    const auto parsed = uhmm::RuntimeConfig::parse(conf);
    const bool ours = parsed->stats == dir.path() + "/uhmm-%p.json";
    end.stats = read_stats(parsed->stats, end.pid, ours ? dir.path() : std::string());
    print_summary(end, common.json);
    return end.exit_status;
}

}  // namespace hmmctl
