// Ending a program under libuhmm_preload.so never hangs and never loses its
// way: main returning while threads fault on device pages, exit() or
// _exit() from a worker, a fatal signal, and signals delivered over and over
// to threads parked in faults. The program is tests/preload/exit_race.cpp,
// run with policy=chaos so that its pages keep moving.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "skip.hpp"

extern char** environ;

std::optional<std::string> uhmm_test_skip_reason() {
    if (auto why = uhmm::test::userfaultfd_unavailable()) return why;
    if (!std::getenv("UHMM_PRELOAD") || !std::getenv("UHMM_EXIT_RACE"))
        return std::string("UHMM_PRELOAD / UHMM_EXIT_RACE not set (run it through meson)");
    return std::nullopt;
}

namespace {

struct Outcome {
    bool finished = false;   // false: still running after the bound, killed
    int status = 0;
    std::string out;
    std::string stats;       // the stats file's text ("" if none)
};

// Run exit_race MODE under the preload; wait at most `bound` for it.
Outcome run(const std::string& mode, std::chrono::seconds bound = std::chrono::seconds(60)) {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("uhmm-exits-" + std::to_string(::getpid()) + "-" + mode);
    fs::create_directories(dir);
    const std::string out_path = (dir / "out.txt").string();
    std::vector<std::string> env_text;
    for (char** e = environ; *e; ++e) env_text.emplace_back(*e);
    env_text.push_back(std::string("LD_PRELOAD=") + std::getenv("UHMM_PRELOAD"));
    env_text.push_back("UHMM_CONF=arena=memfd,arena_size=512M,policy=chaos,chaos_period_ms=5,chaos_fraction=0.5,"
                       "min_range=64K,stats=" + (dir / "stats-%p.json").string());
    std::vector<char*> envp;
    for (auto& s : env_text) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string prog = std::getenv("UHMM_EXIT_RACE");
    std::vector<char*> argv{prog.data(), const_cast<char*>(mode.c_str()), nullptr};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, prog.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    REQUIRE(rc == 0);
    Outcome o;
    const auto deadline = std::chrono::steady_clock::now() + bound;
    while (std::chrono::steady_clock::now() < deadline) {
        if (::waitpid(pid, &o.status, WNOHANG) == pid) {
            o.finished = true;
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!o.finished) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &o.status, 0);
    }
    std::ifstream out(out_path);
    o.out.assign(std::istreambuf_iterator<char>(out), {});
    std::ifstream st(dir / ("stats-" + std::to_string(pid) + ".json"));
    o.stats.assign(std::istreambuf_iterator<char>(st), {});
    fs::remove_all(dir);
    return o;
}

bool exited(const Outcome& o, int code) { return WIFEXITED(o.status) && WEXITSTATUS(o.status) == code; }

}  // namespace

TEST_CASE("main returns while worker threads fault on moving pages: exit completes, statistics written") {
    const auto o = run("exit");
    REQUIRE(o.finished);
    CHECK(exited(o, 0));
    CHECK(o.out == "bad 0\n");
    INFO("stats: " << o.stats);
    REQUIRE(!o.stats.empty());
    const auto stats = nlohmann::json::parse(o.stats);
    CHECK(stats.at("pages_to_device").get<long>() > 0);   // its pages really moved
    CHECK(stats.at("device_faults").get<long>() > 0);     // and came back on touches
}

TEST_CASE("a worker calls exit() while the others fault: it completes") {
    const auto o = run("thread-exit");
    REQUIRE(o.finished);
    CHECK(exited(o, 0));
}

TEST_CASE("a worker calls _exit() (exit_group, no handlers): it completes") {
    const auto o = run("_exit");
    REQUIRE(o.finished);
    CHECK(exited(o, 0));
    CHECK(o.stats.empty());   // no exit handlers ran: no statistics, as documented
}

TEST_CASE("a fatal signal ends the program as it would without uhmm") {
    const auto o = run("signal");
    REQUIRE(o.finished);
    CHECK(WIFSIGNALED(o.status));
    CHECK(WTERMSIG(o.status) == SIGTERM);
}

TEST_CASE("signals delivered over and over to threads parked in faults: handled, data intact") {
    const auto o = run("signals");
    REQUIRE(o.finished);
    CHECK(exited(o, 0));
    INFO(o.out);
    CHECK(o.out.find("bad 0") != std::string::npos);
    CHECK(o.out.find("signals handled 0,") == std::string::npos);
}
