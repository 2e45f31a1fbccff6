// See harness.hpp.
#include "harness.hpp"

#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

extern char** environ;

namespace uhmm::hmmctl_test {

namespace {

using Clock = std::chrono::steady_clock;

std::string env_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

bool dropped_from_env(const char* entry) {
    for (const char* prefix : {"LD_PRELOAD=", "UHMM_CONF=", "MALLOC_PERTURB_="})
        if (std::strncmp(entry, prefix, std::strlen(prefix)) == 0) return true;
    return false;
}

std::vector<std::string> child_environment(const std::vector<std::string>& extra) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e)
        if (!dropped_from_env(*e)) env.emplace_back(*e);
    env.insert(env.end(), extra.begin(), extra.end());
    return env;
}

int millis_until(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left < 0 ? 0 : static_cast<int>(left);
}

// In the forked child: own process group, the given fds as 0/1/2, exec.
[[noreturn]] void exec_child(std::vector<std::string> argv, std::vector<std::string> env, int in, int out,
                             int err) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(127);
    auto args = c_strings(argv);
    auto envp = c_strings(env);
    ::execve(args[0], args.data(), envp.data());
    std::fprintf(stderr, "harness: exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
}

int status_of(int wstatus) {
    if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
    return -1;
}

// waitpid with a deadline; kills the child's group when it passes.
int wait_for(pid_t pid, Clock::time_point deadline, bool* timed_out) {
    int wstatus = 0;
    for (;;) {
        const pid_t got = ::waitpid(pid, &wstatus, WNOHANG);
        if (got == pid) return status_of(wstatus);
        if (got < 0 && errno != EINTR) return -1;
        if (Clock::now() >= deadline) {
            if (timed_out) *timed_out = true;
            ::kill(-pid, SIGKILL);
            ::kill(pid, SIGKILL);
            while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {}
            return -1;
        }
        ::usleep(5000);
    }
}

}  // namespace

Inputs read_inputs() {
    Inputs in;
    in.hmmctl = env_or_empty("UHMM_HMMCTL");
    in.target = env_or_empty("UHMM_HMMCTL_TARGET");
    in.preload = env_or_empty("UHMM_PRELOAD");
    if (::access(in.hmmctl.c_str(), X_OK) != 0) in.problem += "UHMM_HMMCTL must name the built hmmctl. ";
    if (::access(in.target.c_str(), X_OK) != 0) in.problem += "UHMM_HMMCTL_TARGET must name the built target. ";
    if (::access(in.preload.c_str(), R_OK) != 0) in.problem += "UHMM_PRELOAD must name libuhmm_preload.so. ";
    if (!in.problem.empty()) in.problem += "meson test sets these (tests/hmmctl/meson.build).";
    return in;
}

std::string Ran::describe() const {
    return "status " + std::to_string(status) + (timed_out ? " (timed out)" : "") + "\n--- stdout:\n" + out +
           "--- stderr:\n" + err + "---";
}

nlohmann::json Ran::json() const {
    return nlohmann::json::parse(out.substr(0, out.find('\n')), nullptr, false);
}

Ran run(const std::vector<std::string>& argv, const RunOptions& options) {
    Ran ran;
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return ran;
    if (::pipe2(err, O_CLOEXEC) != 0) {
        ::close(out[0]);
        ::close(out[1]);
        return ran;
    }
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    auto env = child_environment(options.env);
    const pid_t pid = ::fork();
    if (pid == 0) exec_child(argv, env, null, out[1], err[1]);
    ::close(null);
    ::close(out[1]);
    ::close(err[1]);
    const auto deadline = Clock::now() + std::chrono::seconds(options.timeout_s);
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    std::string* sinks[2] = {&ran.out, &ran.err};
    int open_fds = 2;
    while (open_fds > 0 && pid > 0) {
        const int r = ::poll(fds, 2, millis_until(deadline));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[65536];
            const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                sinks[i]->append(buf, static_cast<std::size_t>(n));
            } else {
                ::close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    ran.status = pid > 0 ? wait_for(pid, deadline, &ran.timed_out) : -1;
    for (auto& f : fds)
        if (f.fd >= 0) ::close(f.fd);
    return ran;
}

Target::Target(const std::vector<std::string>& argv, const std::vector<std::string>& env,
               const std::string& err_path)
    : err_path_(err_path) {
    ::signal(SIGPIPE, SIG_IGN);   // a target that died: its input's writes fail, and are checked
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0) return;
    if (::pipe2(out, O_CLOEXEC) != 0) {
        ::close(in[0]);
        ::close(in[1]);
        return;
    }
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    auto child_env = child_environment(env);
    child_ = ::fork();
    if (child_ == 0) exec_child(argv, child_env, in[0], out[1], err);
    ::close(in[0]);
    ::close(out[1]);
    if (err >= 0) ::close(err);
    in_ = in[1];
    out_ = out[0];
}

Target::~Target() {
    // The end of its input ends the target (and so `hmmctl run`, which then
    // cleans up after itself); the whole group is killed if that takes long.
    if (in_ >= 0) ::close(in_);
    if (child_ > 0) (void)wait_for(child_, Clock::now() + std::chrono::seconds(10), nullptr);
    if (out_ >= 0) ::close(out_);
}

std::string Target::read_line(int timeout_s) {
    const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
    for (;;) {
        if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
            last_ = buffer_.substr(0, nl);
            buffer_.erase(0, nl + 1);
            return last_;
        }
        pollfd p{out_, POLLIN, 0};
        const int r = ::poll(&p, 1, millis_until(deadline));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return last_ = "";
        char buf[4096];
        const ssize_t n = ::read(out_, buf, sizeof buf);
        if (n <= 0) return last_ = "";
        buffer_.append(buf, static_cast<std::size_t>(n));
    }
}

bool Target::ready(int timeout_s) {
    if (child_ <= 0) return false;
    const std::string line = read_line(timeout_s);
    int pid = 0;
    unsigned long addr = 0, len = 0;
    if (std::sscanf(line.c_str(), "READY %d %lu %lu", &pid, &addr, &len) != 3) return false;
    pid_ = pid;
    addr_ = addr;
    len_ = len;
    return true;
}

bool Target::alive() const { return pid_ > 0 && ::kill(pid_, 0) == 0; }

std::string Target::ask(const std::string& command, int timeout_s) {
    const std::string line = command + "\n";
    if (in_ < 0 || ::write(in_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return "";
    return read_line(timeout_s);
}

int Target::finish(const std::string& command, int timeout_s) {
    const std::string line = command + "\n";
    if (in_ >= 0) {
        if (!command.empty()) (void)!::write(in_, line.data(), line.size());
        ::close(in_);
        in_ = -1;
    }
    if (child_ <= 0) return -1;
    bool timed_out = false;
    const int status = wait_for(child_, Clock::now() + std::chrono::seconds(timeout_s), &timed_out);
    child_ = -1;
    return timed_out ? -1 : status;
}

std::string Target::stderr_text() const { return read_file(err_path_); }

Raw::Raw(const std::string& socket_path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof addr.sun_path) {
        connect_errno_ = ENAMETOOLONG;
        return;
    }
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        connect_errno_ = errno;
        ::close(fd_);
        fd_ = -1;
    }
}

Raw::~Raw() {
    if (fd_ >= 0) ::close(fd_);
}

bool Raw::send(const std::string& bytes) {
    std::size_t done = 0;
    while (fd_ >= 0 && done < bytes.size()) {
        const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
    }
    return fd_ >= 0;
}

std::optional<std::string> Raw::line(int timeout_s) {
    const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
    for (;;) {
        if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
            std::string l = buffer_.substr(0, nl);
            buffer_.erase(0, nl + 1);
            return l;
        }
        pollfd p{fd_, POLLIN, 0};
        const int r = ::poll(&p, 1, millis_until(deadline));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return std::nullopt;
        char buf[65536];
        const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) return std::nullopt;
        buffer_.append(buf, static_cast<std::size_t>(n));
    }
}

bool Raw::closed_by_server(int timeout_s) {
    const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
    for (;;) {
        pollfd p{fd_, POLLIN, 0};
        const int r = ::poll(&p, 1, millis_until(deadline));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        char buf[65536];
        const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
        if (n < 0 && errno != EINTR) return true;
    }
}

int bound_socket(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return -1;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s >= 0 && ::bind(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return s;
    if (s >= 0) ::close(s);
    return -1;
}

bool stale_socket(const std::string& path) {
    const int s = bound_socket(path);
    if (s >= 0) ::close(s);
    return s >= 0;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

pid_t unused_pid() {
    long max = 32768;
    if (std::FILE* f = std::fopen("/proc/sys/kernel/pid_max", "r")) {
        if (std::fscanf(f, "%ld", &max) != 1) max = 32768;
        std::fclose(f);
    }
    for (pid_t p = static_cast<pid_t>(max - 1); p > 1; --p)
        if (::kill(p, 0) != 0 && errno == ESRCH) return p;
    return -1;
}

}  // namespace uhmm::hmmctl_test
