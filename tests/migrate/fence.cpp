// Fence semantics: wait, poll, wait_for, callbacks before and after the
// signal, the summary error, and which thread runs a callback.
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "arena_fixture.hpp"
#include "migrate/fence_state.hpp"

using namespace uhmm;
using namespace uhmm::test;
using migrate::CopyOp;
using migrate::Direction;
using migrate::EngineKind;
using migrate::Fence;

TEST_CASE("a fence signals after its last op and not before") {
    auto s = migrate::detail::make_fence_state(3);
    Fence f(s);
    CHECK_FALSE(f.poll());
    s->complete(2, 10, {});
    s->complete(0, 10, {});
    CHECK_FALSE(f.poll());
    CHECK_FALSE(f.wait_for(std::chrono::milliseconds(1)));
    s->complete(1, 10, {});
    CHECK(f.poll());
    CHECK(f.wait_for(std::chrono::milliseconds(1)));
    CHECK_FALSE(f.wait());
    CHECK(f.bytes() == 30);
}

TEST_CASE("an empty batch and a default fence are signalled at once") {
    CHECK(Fence().poll());
    CHECK_FALSE(Fence().wait());
    CHECK(Fence(migrate::detail::make_fence_state(0)).poll());
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    auto f = (*e)->submit(Direction::to_device, {});
    CHECK(f.poll());
    CHECK(f.size() == 0);
}

TEST_CASE("the summary error is the first failed op's") {
    auto s = migrate::detail::make_fence_state(3);
    s->complete(2, 0, errno_code(EIO));
    s->complete(1, 0, errno_code(EFAULT));
    s->complete(0, 5, {});
    Fence f(s);
    CHECK(f.error() == std::errc::bad_address);
    CHECK(f.failed() == 2);
}

TEST_CASE("a callback registered before the signal runs once, on the signalling thread") {
    auto s = migrate::detail::make_fence_state(1);
    Fence f(s);
    std::atomic<int> calls{0};
    std::thread::id ran_on;
    f.on_complete([&](const Fence& done) {
        ++calls;
        ran_on = std::this_thread::get_id();
        CHECK(done.poll());
        CHECK(done.results()[0].bytes == 4096);
    });
    CHECK(calls == 0);
    std::thread t([&] { s->complete(0, 4096, {}); });
    const auto signaller = t.get_id();
    t.join();
    CHECK(calls == 1);
    CHECK(ran_on == signaller);
}

TEST_CASE("a callback registered after the signal runs at once on the caller") {
    auto s = migrate::detail::make_fence_state(1);
    s->complete(0, 1, {});
    int calls = 0;
    Fence(s).on_complete([&](const Fence&) { ++calls; });
    CHECK(calls == 1);
}

TEST_CASE("a waiter on another thread wakes when the fence signals") {
    auto s = migrate::detail::make_fence_state(1);
    Fence f(s);
    std::atomic<bool> woke{false};
    std::thread waiter([&] {
        f.wait();
        woke = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK_FALSE(woke);
    s->complete(0, 1, {});
    waiter.join();
    CHECK(woke);
}

TEST_CASE("io_uring batch callbacks run on the engine's completion thread with results visible") {
    auto arena = FileArena::create(4u << 20);
    REQUIRE(arena);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    auto& engine = **e;
    auto host = map_anon(2u << 20);
    fill(host.bytes(), 31);

    // Batch A's callback holds the completion thread until released, so that
    // batch B cannot signal before its callback is registered. When A has
    // already signalled at registration, its callback runs here instead and
    // must not block: try again with another A.
    std::mutex mu;
    std::condition_variable cv;
    bool release = false;
    std::thread::id a_thread;
    std::atomic<bool> a_running{false};
    const auto me = std::this_thread::get_id();
    const CopyOp a{host.data(), 0, 1u << 20};
    for (int attempt = 0; attempt < 100 && !a_running; ++attempt) {
        std::atomic<bool> inline_run{false};
        auto fa = engine.submit(Direction::to_device, {&a, 1});
        fa.on_complete([&](const Fence&) {
            if (std::this_thread::get_id() == me) {
                inline_run = true;
                return;
            }
            a_thread = std::this_thread::get_id();
            a_running = true;
            std::unique_lock lk(mu);
            cv.wait(lk, [&] { return release; });
        });
        if (inline_run) continue;
        for (int i = 0; i < 10000 && !a_running; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    REQUIRE(a_running);

    const CopyOp b{host.data(), 1u << 20, 1u << 20};
    auto fence = engine.submit(Direction::to_device, {&b, 1});
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK_FALSE(fence.poll());   // its CQE waits for the stalled completion thread
    std::atomic<int> calls{0};
    std::thread::id b_thread;
    std::uint64_t seen_bytes = 0;
    fence.on_complete([&](const Fence& f) {
        b_thread = std::this_thread::get_id();
        seen_bytes = f.bytes();
        ++calls;
    });
    {
        std::lock_guard lk(mu);
        release = true;
    }
    cv.notify_all();
    REQUIRE_FALSE(fence.wait());
    for (int i = 0; i < 10000 && calls == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(calls == 1);
    CHECK(b_thread == a_thread);
    CHECK(b_thread != std::this_thread::get_id());
    CHECK(seen_bytes == (1u << 20));
    CHECK(std::memcmp(arena->map.data() + (1u << 20), host.data(), 1u << 20) == 0);
}

TEST_CASE("a callback may submit another batch on the same engine") {
    auto arena = FileArena::create(4u << 20);
    REQUIRE(arena);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    auto& engine = **e;
    auto host = map_anon(2 * kPage);
    fill(host.bytes().subspan(0, kPage), 41);
    fill(host.bytes().subspan(kPage, kPage), 42);
    const CopyOp first{host.data(), 0, kPage};
    const CopyOp second{host.data() + kPage, kPage, kPage};
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Fence> chained;
    engine.submit(Direction::to_device, {&first, 1}).on_complete([&](const Fence&) {
        auto f = engine.submit(Direction::to_device, {&second, 1});
        std::lock_guard lk(mu);
        chained = f;
        cv.notify_all();
    });
    std::unique_lock lk(mu);
    REQUIRE(cv.wait_for(lk, std::chrono::seconds(10), [&] { return chained.has_value(); }));
    REQUIRE_FALSE(chained->wait());
    CHECK(mismatch(arena->map.bytes().subspan(0, kPage), 41) == -1);
    CHECK(mismatch(arena->map.bytes().subspan(kPage, kPage), 42) == -1);
}
