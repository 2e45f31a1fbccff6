// fork_exec_storm: a threaded program that starts many short children while
// its own memory keeps changing. Knows nothing of uhmm (no uhmm dependency):
// the preload tests run it natively and under libuhmm_preload.so with a
// chaos policy moving pages every few milliseconds, and compare its output.
//
//   fork_exec_storm THREADS ROUNDS     the parent
//   fork_exec_storm child K            a child: fills 4 MiB from K, prints its sum
//   fork_exec_storm closed K           a child started with fds 0, 1 and 2 closed
//
// Each round of each thread starts four children: fork + exec of this program
// (its line read back through a pipe), posix_spawn of /bin/true (vfork inside
// glibc), fork + exec with the standard descriptors closed (the child's first
// open() must be 0, as natively, and its memory must be right: exit status),
// and a fork without exec that checks the memory it inherited. Meanwhile the
// main thread rewrites and checks 32 MiB of its own. Every check failure is a
// line on stdout and a non-zero exit; the output is otherwise the same on
// every run.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

std::mutex out_lock;
std::atomic<int> failures{0};
std::string self;

void fail(const std::string& what) {
    std::lock_guard lock(out_lock);
    std::printf("FAIL %s\n", what.c_str());
    std::fflush(stdout);
    failures.fetch_add(1);
}

std::uint64_t fill(std::vector<std::uint64_t>& v, std::uint64_t seed) {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
        v[i] = (seed + i) * 0x9e3779b97f4a7c15ULL;
        sum += v[i];
    }
    return sum;
}

std::uint64_t sum_of(const std::vector<std::uint64_t>& v) {
    std::uint64_t sum = 0;
    for (auto x : v) sum += x;
    return sum;
}

// What a child with key K prints: the sum of its 4 MiB, filled from K.
std::uint64_t child_sum(std::uint64_t k) {
    std::vector<std::uint64_t> v(512 * 1024);
    return fill(v, k);
}

int run_child(std::uint64_t k) {
    std::vector<std::uint64_t> v(512 * 1024);
    const std::uint64_t sum = fill(v, k);
    if (sum_of(v) != sum) return 3;
    std::printf("child %llu %llu\n", static_cast<unsigned long long>(k), static_cast<unsigned long long>(sum));
    return 0;
}

int run_closed_child(std::uint64_t k) {
    // Started with 0, 1 and 2 closed: the lowest descriptor is 0 here, as it
    // is natively (nothing of a runtime may sit there).
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd != 0) return 4;
    std::vector<std::uint64_t> v(512 * 1024);
    const std::uint64_t sum = fill(v, k);
    return sum_of(v) == sum && sum == child_sum(k) ? 0 : 5;
}

int wait_status(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void exec_and_read(std::uint64_t k) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return fail("pipe");
    const std::string key = std::to_string(k);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(p[1], 1);
        ::execl(self.c_str(), self.c_str(), "child", key.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(p[1]);
    std::string got;
    char buf[256];
    for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        got.append(buf, static_cast<std::size_t>(n));
    }
    ::close(p[0]);
    const int status = wait_status(pid);
    const std::string want = "child " + key + " " + std::to_string(child_sum(k)) + "\n";
    if (status != 0 || got != want) fail("exec child " + key + ": status " + std::to_string(status) + ", said '" + got + "'");
}

void spawn_true() {
    pid_t pid = 0;
    char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
    if (::posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) != 0) return fail("posix_spawn");
    if (wait_status(pid) != 0) fail("/bin/true failed");
}

void exec_closed(std::uint64_t k) {
    const std::string key = std::to_string(k);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(0);
        ::close(1);
        ::close(2);
        ::execl(self.c_str(), self.c_str(), "closed", key.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    if (const int status = wait_status(pid); status != 0)
        fail("child with closed stdio " + key + ": status " + std::to_string(status));
}

void fork_and_check(const std::vector<std::uint64_t>& mine, std::uint64_t sum) {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(sum_of(mine) == sum ? 0 : 6);
    if (const int status = wait_status(pid); status != 0) fail("forked child: status " + std::to_string(status));
}

void storm(int thread, int rounds) {
    std::vector<std::uint64_t> mine(256 * 1024);   // 2 MiB the forked children check
    for (int r = 0; r < rounds; ++r) {
        const std::uint64_t k = static_cast<std::uint64_t>(thread) * 1000 + static_cast<std::uint64_t>(r);
        const std::uint64_t sum = fill(mine, k);
        exec_and_read(k);
        spawn_true();
        exec_closed(k);
        fork_and_check(mine, sum);
        if (sum_of(mine) != sum) fail("thread " + std::to_string(thread) + " lost its data");
    }
}

}  // namespace

int main(int argc, char** argv) {
    self = argv[0];
    if (argc == 3 && std::strcmp(argv[1], "child") == 0) return run_child(std::strtoull(argv[2], nullptr, 10));
    if (argc == 3 && std::strcmp(argv[1], "closed") == 0) return run_closed_child(std::strtoull(argv[2], nullptr, 10));
    if (argc != 3) {
        std::fprintf(stderr, "usage: fork_exec_storm THREADS ROUNDS\n");
        return 2;
    }
    const int threads = std::atoi(argv[1]), rounds = std::atoi(argv[2]);
    std::atomic<bool> done{false};
    std::thread churn([&] {
        // The parent's own memory keeps changing while children come and go.
        std::vector<std::uint64_t> big(4 * 1024 * 1024);
        for (std::uint64_t pass = 0; !done.load(); ++pass) {
            const std::uint64_t sum = fill(big, pass);
            if (sum_of(big) != sum) fail("the parent's 32 MiB changed under it in pass " + std::to_string(pass));
        }
    });
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) workers.emplace_back(storm, t, rounds);
    for (auto& w : workers) w.join();
    done.store(true);
    churn.join();
    std::printf("threads %d rounds %d children %d failures %d\n", threads, rounds, threads * rounds * 4, failures.load());
    return failures.load() == 0 ? 0 : 1;
}
