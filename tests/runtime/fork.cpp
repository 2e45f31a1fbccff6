// fork() with pages on the device: parent and child each keep the data they
// had at fork time, whatever the other does afterwards (writes, migrations,
// destroying its runtime, exiting), and neither hangs. Children never run
// Catch: they _exit(code) with a code saying what they saw, and the parent
// waits with a timeout (a hung child is killed and reported).
#include <catch2/catch.hpp>

#include <poll.h>
#include <spawn.h>

#include <atomic>
#include <thread>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

constexpr std::size_t kPages = 1024, kLen = kPages * kPage;   // 4 MiB
constexpr std::size_t kFilled = 768;                          // [768, 1024) never touched
constexpr std::size_t kOnDevice = 512;                        // [0, 512) on the device

// The child's exit codes.
enum : int { kOk = 0, kBadFork = 1, kBadWrite = 2, kBadRead = 3, kNoSignal = 4, kBadSetup = 5 };
const char* explain(int code) {
    switch (code) {
        case kOk: return "ok";
        case kBadFork: return "child saw wrong fork-time data";
        case kBadWrite: return "child's own write did not stick";
        case kBadRead: return "child saw the parent's later writes or lost data";
        case kNoSignal: return "child got no go-ahead from the parent";
        case kBadSetup: return "setup failed in the child";
        case -1: return "hung (killed after the timeout)";
        default: return code < -1000 ? "killed by a signal" : "unknown code";
    }
}

// The fork-time contents: pattern on [0, kFilled), zero after.
bool fork_time_data(const std::byte* p) {
    return first_mismatch(p, kFilled * kPage) == kFilled * kPage &&
           first_nonzero(p + kFilled * kPage, (kPages - kFilled) * kPage) == (kPages - kFilled) * kPage;
}

struct Setup {
    std::unique_ptr<Runtime> rt = make_runtime();
    Mapping m{kLen};
    Setup() {
        REQUIRE(m);
        fill_pattern(m.data(), kFilled * kPage);
        REQUIRE(!rt->manage(m.data(), kLen));
        REQUIRE(migrate_ok(*rt, m.data(), kOnDevice * kPage, Target::device).migrated == kOnDevice);
        REQUIRE(rt->stats().device_pages == kOnDevice);
        REQUIRE(cpu_mapped_pages(m.data(), kOnDevice * kPage) == 0);
    }
};

void check_parent_can_still_migrate(Runtime& rt, std::byte* p) {
    CHECK(fork_time_data(p));
    const auto r = migrate_ok(rt, p, kLen, Target::device);
    CHECK(r.failed == 0);
    CHECK(r.migrated + r.already_there == kPages);
    CHECK(count_state(rt, p, kFilled * kPage, PageState::device) == kFilled);
    CHECK(fork_time_data(p));
    // And fresh memory too.
    auto a = rt.allocate(64 * kPage);
    REQUIRE(a.ok());
    auto* q = static_cast<std::byte*>(*a);
    fill_pattern(q, 64 * kPage);
    CHECK(migrate_ok(rt, q, 64 * kPage, Target::device).migrated == 64);
    CHECK(first_mismatch(q, 64 * kPage) == 64 * kPage);
    CHECK(!rt.release(q, 64 * kPage));
}

}  // namespace

TEST_CASE("the child reads the parent's device pages and writes its own copy; the parent keeps its data") {
    Setup s;
    auto* p = s.m.data();
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (!fork_time_data(p)) ::_exit(kBadFork);
        fill_salted(p, kLen, 8);
        if (first_mismatch_salted(p, kLen, 8) != kLen) ::_exit(kBadWrite);
        ::_exit(kOk);
    }
    const int code = child_exit_code(wait_child(pid, 60));
    INFO("child: " << code << " " << explain(code));
    CHECK(code == kOk);
    // The parent's pages are where they were, with their data.
    CHECK(count_state(*s.rt, p, kLen, PageState::migrating) == 0);
    check_parent_can_still_migrate(*s.rt, p);
}

TEST_CASE("a child that exits at once leaves the parent running, fork after fork") {
    Setup s;
    auto* p = s.m.data();
    for (int round = 0; round < 5; ++round) {
        INFO("round " << round);
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) ::_exit(kOk);
        const int code = child_exit_code(wait_child(pid, 60));
        INFO("child: " << code << " " << explain(code));
        CHECK(code == kOk);
        // Touch half of the device pages, send everything back.
        CHECK(first_mismatch(p, kOnDevice / 2 * kPage) == kOnDevice / 2 * kPage);
        const auto r = migrate_ok(*s.rt, p, kOnDevice * kPage, Target::device);
        CHECK(r.failed == 0);
        CHECK(r.migrated + r.already_there == kOnDevice);
        CHECK(s.rt->stats().device_pages == kOnDevice);
    }
    check_parent_can_still_migrate(*s.rt, p);
}

TEST_CASE("the parent's writes and migrations after fork do not reach the child") {
    Setup s;
    auto* p = s.m.data();
    int go[2];
    REQUIRE(::pipe(go) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(go[1]);
        pollfd pf{go[0], POLLIN, 0};
        char c = 0;
        if (::poll(&pf, 1, 60000) != 1 || ::read(go[0], &c, 1) != 1) ::_exit(kNoSignal);
        if (!fork_time_data(p)) ::_exit(kBadRead);
        ::_exit(kOk);
    }
    ::close(go[0]);
    // The parent rewrites everything (device pages come home first), sends it
    // all to the device, reads part of it back, discards some.
    fill_salted(p, kLen, 11);
    REQUIRE(migrate_ok(*s.rt, p, kLen, Target::device).migrated == kPages);
    CHECK(first_mismatch_salted(p, kLen / 2, 11) == kLen / 2);
    REQUIRE(::madvise(p + kLen / 2, kLen / 4, MADV_DONTNEED) == 0);
    REQUIRE(::write(go[1], "g", 1) == 1);
    ::close(go[1]);
    const int code = child_exit_code(wait_child(pid, 60));
    INFO("child: " << code << " " << explain(code));
    CHECK(code == kOk);
    // The parent has what it wrote.
    CHECK(first_mismatch_salted(p, kLen / 2, 11) == kLen / 2);
    CHECK(first_nonzero(p + kLen / 2, kLen / 4) == kLen / 4);
    CHECK(first_mismatch_salted(p + 3 * kLen / 4, kLen / 4, 11) == kLen / 4);
}

TEST_CASE("the child's memory survives the parent's runtime being destroyed") {
    Setup s;
    auto* p = s.m.data();
    int go[2];
    REQUIRE(::pipe(go) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(go[1]);
        pollfd pf{go[0], POLLIN, 0};
        char c = 0;
        if (::poll(&pf, 1, 60000) != 1 || ::read(go[0], &c, 1) != 1) ::_exit(kNoSignal);
        if (!fork_time_data(p)) ::_exit(kBadRead);
        fill_salted(p, kLen, 2);
        if (first_mismatch_salted(p, kLen, 2) != kLen) ::_exit(kBadWrite);
        ::_exit(kOk);
    }
    ::close(go[0]);
    s.rt.reset();   // every device page comes home in the parent, then the runtime stops
    REQUIRE(::write(go[1], "g", 1) == 1);
    ::close(go[1]);
    const int code = child_exit_code(wait_child(pid, 60));
    INFO("child: " << code << " " << explain(code));
    CHECK(code == kOk);
    CHECK(fork_time_data(p));
}

TEST_CASE("fork while another thread migrates: every child sees whole, correct data") {
    Setup s;
    auto* p = s.m.data();
    std::atomic<bool> stop{false};
    std::atomic<std::size_t> bad{0}, calls{0};
    std::thread mover([&] {
        std::uint64_t x = 12345;
        while (!stop.load(std::memory_order_relaxed)) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            const std::size_t first = (x >> 33) % kPages;
            const std::size_t n = 1 + (x >> 20) % std::min<std::size_t>(128, kPages - first);
            const Target to = ((x >> 11) % 4 == 0) ? Target::host : Target::device;
            auto r = s.rt->migrate(p + first * kPage, n * kPage, to);
            if (!r.ok() || r->migrated + r->already_there + r->failed != n) bad.fetch_add(1);
            calls.fetch_add(1, std::memory_order_relaxed);
        }
    });
    const int rounds = static_cast<int>(scaled(16));
    int failures = 0;
    for (int round = 0; round < rounds; ++round) {
        ::usleep(2000);
        const pid_t pid = ::fork();
        if (pid < 0) {
            ++failures;
            continue;
        }
        if (pid == 0) ::_exit(fork_time_data(p) ? kOk : kBadFork);
        const int code = child_exit_code(wait_child(pid, 60));
        if (code != kOk) {
            ++failures;
            UNSCOPED_INFO("round " << round << ": child " << code << " " << explain(code));
        }
    }
    stop.store(true);
    mover.join();
    INFO("migrate calls " << calls.load());
    CHECK(failures == 0);
    CHECK(bad.load() == 0);
    CHECK(calls.load() > 0);
    CHECK(fork_time_data(p));
}

TEST_CASE("posix_spawn with pages on the device neither hangs nor changes them") {
    Setup s;
    auto* p = s.m.data();
    pid_t pid = -1;
    char* const argv[] = {const_cast<char*>("true"), nullptr};
    const int rc = ::posix_spawnp(&pid, "true", nullptr, nullptr, argv, environ);
    REQUIRE(rc == 0);
    const auto status = wait_child(pid, 60);
    INFO("child " << child_exit_code(status));
    CHECK(child_exit_code(status) == 0);
    CHECK(fork_time_data(p));
}

TEST_CASE("a child whose parent (with its runtime) exited still reads its fork-time data") {
    // This process forks A; A builds a runtime, puts pages on the device,
    // forks B and exits at once. B waits for A to be gone, reads its memory
    // and reports through a pipe: its pid, then one result byte.
    int res[2];
    REQUIRE(::pipe(res) == 0);
    const pid_t a = ::fork();
    REQUIRE(a >= 0);
    if (a == 0) {
        ::close(res[0]);
        auto cfg = RuntimeConfig::parse(kMemfdConf);
        if (!cfg.ok()) ::_exit(kBadSetup);
        auto rt = Runtime::create(*cfg);
        if (!rt.ok()) ::_exit(kBadSetup);
        void* mem = ::mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) ::_exit(kBadSetup);
        auto* p = static_cast<std::byte*>(mem);
        fill_pattern(p, kFilled * kPage);
        if ((*rt)->manage(p, kLen)) ::_exit(kBadSetup);
        auto r = (*rt)->migrate(p, kOnDevice * kPage, Target::device);
        if (!r.ok() || r->migrated != kOnDevice) ::_exit(kBadSetup);
        const pid_t apid = ::getpid();
        const pid_t b = ::fork();
        if (b < 0) ::_exit(kBadSetup);
        if (b == 0) {
            const pid_t me = ::getpid();
            if (::write(res[1], &me, sizeof me) != sizeof me) ::_exit(kBadSetup);
            for (int i = 0; i < 10000 && ::getppid() == apid; ++i) ::usleep(1000);
            char code = kOk;
            if (::getppid() == apid) code = kNoSignal;
            else if (!fork_time_data(p)) code = kBadRead;
            else {
                fill_salted(p, kLen, 4);
                if (first_mismatch_salted(p, kLen, 4) != kLen) code = kBadWrite;
            }
            if (::write(res[1], &code, 1) != 1) ::_exit(kBadSetup);
            ::_exit(code);
        }
        ::_exit(kOk);   // with the runtime alive: no destructor runs
    }
    ::close(res[1]);
    const int acode = child_exit_code(wait_child(a, 60));
    INFO("A: " << acode << " " << explain(acode));
    REQUIRE(acode == kOk);

    pid_t b = 0;
    pollfd pf{res[0], POLLIN, 0};
    REQUIRE(::poll(&pf, 1, 30000) == 1);
    REQUIRE(::read(res[0], &b, sizeof b) == static_cast<ssize_t>(sizeof b));
    REQUIRE(b > 0);
    char code = -1;
    const int ready = ::poll(&pf, 1, 60000);
    const bool answered = ready == 1 && ::read(res[0], &code, 1) == 1;
    if (!answered) ::kill(b, SIGKILL);   // hung: B is not our child, init reaps it
    ::close(res[0]);
    INFO("B: " << (answered ? explain(code) : "hung or died without answering"));
    REQUIRE(answered);
    CHECK(int(code) == kOk);
}
