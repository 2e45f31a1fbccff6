// Guarded copies (lib/migrate/guarded_copy.hpp): memcpy to and from
// application memory that answers EFAULT when the memory goes mid-copy, and
// that never changes how the program itself dies or handles its own faults.
//
// Cases that end or reconfigure a process run in a fork()ed child, which
// reports through its exit status.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "arena_fixture.hpp"
#include "migrate/guarded_copy.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;
using migrate::CopyOp;
using migrate::Direction;
using migrate::EngineKind;
namespace guard = uhmm::migrate::detail;

namespace {

bool default_disposition(int sig) {
    struct sigaction cur {};
    return ::sigaction(sig, nullptr, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_DFL;
}

// Run `body` in a fork()ed child; its wait status.
int in_child(const std::function<int()>& body) {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(body());
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
}

void own_handler(int) {}

}  // namespace

// A sanitizer's runtime owns SIGSEGV: guarded copies then step aside (the
// kernel's copy serves), and what this binary checks does not apply.
std::optional<std::string> uhmm_test_skip_reason() {
    if (!default_disposition(SIGSEGV) || !default_disposition(SIGBUS))
        return std::string("SIGSEGV/SIGBUS already have a handler in this process (a sanitizer's): guarded "
                           "copies are not used here");
    return std::nullopt;
}

TEST_CASE("guarded copies: ready in a process without handlers of its own, and they copy") {
    REQUIRE(guard::guarded_copy_ready());
    auto src = map_anon(5 * kPage + 100);
    auto dst = map_anon(6 * kPage);
    fill(src.bytes(), 3);
    guard::FaultsUnblocked faults;
    const auto o = guard::guarded_copy(dst.data() + 7, src.data(), 5 * kPage + 100, src.data());
    CHECK(o.error == 0);
    CHECK(o.bytes == 5 * kPage + 100);
    CHECK(std::memcmp(dst.data() + 7, src.data(), 5 * kPage + 100) == 0);
}

TEST_CASE("guarded copies: a page that cannot be read ends the copy with EFAULT and the bytes before it") {
    REQUIRE(guard::guarded_copy_ready());
    auto src = map_anon(4 * kPage);
    auto dst = map_anon(4 * kPage);
    fill(src.bytes(), 4);
    REQUIRE(::mprotect(src.data() + 2 * kPage, kPage, PROT_NONE) == 0);
    guard::FaultsUnblocked faults;
    // From mid-page: the first step ends at the application page's boundary.
    auto o = guard::guarded_copy(dst.data(), src.data() + 100, 4 * kPage - 100, src.data() + 100);
    CHECK(o.error == EFAULT);
    CHECK(o.bytes == 2 * kPage - 100);
    CHECK(std::memcmp(dst.data(), src.data() + 100, 2 * kPage - 100) == 0);
    // Into application memory (device → host): the same.
    o = guard::guarded_copy(src.data() + kPage, dst.data(), 2 * kPage, src.data() + kPage);
    CHECK(o.error == EFAULT);
    CHECK(o.bytes == kPage);
    // And the thread goes on copying afterwards.
    o = guard::guarded_copy(dst.data(), src.data(), kPage, src.data());
    CHECK(o.error == 0);
}

TEST_CASE("memory replaced while the engines copy it: EFAULT for what went, never a crash") {
    // A writer of the pattern, a copier, and a thread that keeps replacing
    // part of the host range with an inaccessible mapping and back (as an
    // application's munmap would, without letting another mapping land in
    // the hole).
    const auto kind = GENERATE(EngineKind::memcpy, EngineKind::uring);
    INFO("engine " << (kind == EngineKind::memcpy ? "memcpy" : "io_uring"));
    constexpr std::size_t pages = 256;
    auto arena = FileArena::create(pages * kPage);
    REQUIRE(arena);
    auto e = migrate::make_copy_engine(kind, arena->view);
    REQUIRE(e.ok());
    auto host = map_anon(pages * kPage);
    fill(host.bytes(), 9);
    std::atomic<bool> stop{false};
    std::thread flipper([&] {
        std::byte* hole = host.data() + 64 * kPage;
        while (!stop.load()) {
            (void)::mmap(hole, 128 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            std::this_thread::yield();
            (void)::mmap(hole, 128 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            std::this_thread::yield();
        }
    });
    std::size_t faulted = 0, fine = 0;
    for (int round = 0; round < 400; ++round) {
        std::vector<CopyOp> ops;
        for (std::size_t i = 0; i < pages; i += 16) ops.push_back({host.data() + i * kPage, i * kPage, 16 * kPage});
        auto fence = (*e)->submit(Direction::to_device, ops);
        (void)fence.wait();
        for (std::size_t i = 0; i < ops.size(); ++i) {
            const auto& r = fence.results()[i];
            if (r.error) {
                CHECK(r.error == std::errc::bad_address);
                CHECK(r.bytes < ops[i].len);
                ++faulted;
            } else {
                CHECK(r.bytes == ops[i].len);
                ++fine;
            }
        }
    }
    stop.store(true);
    flipper.join();
    INFO("ops faulted " << faulted << ", completed " << fine);
    CHECK(fine > 0);
    CHECK(faulted > 0);   // the copies did meet the replaced memory
    // The pages outside the flipped part never fault.
    CHECK(mismatch(host.bytes().subspan(0, 64 * kPage), 9) == -1);
}

TEST_CASE("a fault outside a guarded copy kills the program as it would without uhmm") {
    SECTION("a stray pointer: SIGSEGV") {
        const int status = in_child([] {
            if (!guard::guarded_copy_ready()) return 3;
            volatile int* stray = nullptr;
            *stray = 1;
            return 0;
        });
        REQUIRE(WIFSIGNALED(status));
        CHECK(WTERMSIG(status) == SIGSEGV);
    }
    SECTION("SIGSEGV and SIGBUS sent by kill()") {
        for (int sig : {SIGSEGV, SIGBUS}) {
            const int status = in_child([sig] {
                if (!guard::guarded_copy_ready()) return 3;
                ::kill(::getpid(), sig);
                return 0;
            });
            REQUIRE(WIFSIGNALED(status));
            CHECK(WTERMSIG(status) == sig);
        }
    }
    SECTION("a fault in another thread while this one copies: that thread's fault is not ours") {
        const int status = in_child([] {
            if (!guard::guarded_copy_ready()) return 3;
            auto src = map_anon(64 * kPage), dst = map_anon(64 * kPage);
            std::thread faulter([] {
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
                volatile int* stray = nullptr;
                *stray = 1;
            });
            guard::FaultsUnblocked faults;
            for (;;) (void)guard::guarded_copy(dst.data(), src.data(), 64 * kPage, src.data());
        });
        REQUIRE(WIFSIGNALED(status));
        CHECK(WTERMSIG(status) == SIGSEGV);
    }
}

TEST_CASE("a program's own SIGSEGV handler is left alone, and copies fall back to the kernel's") {
    SECTION("installed before the first copy: guarded copies are never used") {
        const int status = in_child([] {
            // As a fresh program: both at their default (this test process
            // has used guarded copies already), then the program's own.
            ::signal(SIGSEGV, SIG_DFL);
            ::signal(SIGBUS, SIG_DFL);
            struct sigaction sa {};
            sa.sa_handler = own_handler;
            sigemptyset(&sa.sa_mask);
            if (::sigaction(SIGSEGV, &sa, nullptr) != 0) return 2;
            if (guard::guarded_copy_ready()) return 3;
            struct sigaction now {};
            ::sigaction(SIGSEGV, nullptr, &now);
            if (now.sa_handler != own_handler) return 4;
            if (!default_disposition(SIGBUS)) return 5;   // SIGBUS not taken either
            // The io_uring engine still answers EFAULT (the kernel's copy).
            auto arena = FileArena::create(1u << 20);
            auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
            if (!e.ok()) return 6;
            auto host = map_anon(2 * kPage);
            ::mprotect(host.data() + kPage, kPage, PROT_NONE);
            const std::vector<CopyOp> ops{{host.data(), 0, kPage}, {host.data() + kPage, kPage, kPage}};
            auto fence = (*e)->submit(Direction::to_device, ops);
            (void)fence.wait();
            if (fence.results()[0].error || fence.results()[1].error != std::errc::bad_address) return 7;
            return 0;
        });
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
    SECTION("installed after: it takes over, and guarded copies stop") {
        const int status = in_child([] {
            if (!guard::guarded_copy_ready()) return 3;
            struct sigaction sa {};
            sa.sa_handler = own_handler;
            sigemptyset(&sa.sa_mask);
            ::sigaction(SIGSEGV, &sa, nullptr);
            if (guard::guarded_copy_ready()) return 4;
            return 0;
        });
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
}
