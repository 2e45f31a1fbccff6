// Several threads submitting at once on one engine: every byte lands where
// its op said, and every fence signals. Run by the TSan build.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "arena_fixture.hpp"

using namespace uhmm;
using namespace uhmm::test;
using migrate::CopyOp;
using migrate::Direction;
using migrate::EngineKind;

namespace {

constexpr std::size_t kThreads = 4;
constexpr std::size_t kPagesPerThread = 512;   // each thread owns 2 MiB of the arena
constexpr std::size_t kRounds = 8;

}  // namespace

TEST_CASE("threads submitting batches at once all land byte for byte") {
    // io_uring, io_uring in CPU-worker mode, memcpy.
    const int mode = GENERATE(0, 1, 2);
    const auto kind = mode == 2 ? EngineKind::memcpy : EngineKind::uring;
    auto arena = FileArena::create(kThreads * kPagesPerThread * kPage);
    REQUIRE(arena);
    migrate::EngineOptions opts;
    opts.queue_depth = 16;   // smaller than one thread's batch: ops queue behind each other
    opts.cpu_worker = mode == 1;
    auto e = migrate::make_copy_engine(kind, arena->view, opts);
    REQUIRE(e.ok());
    auto& engine = **e;

    std::atomic<std::size_t> bad{0};
    std::atomic<std::size_t> failed_ops{0};
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            auto out = map_anon(kPagesPerThread * kPage);
            auto back = map_anon(kPagesPerThread * kPage);
            for (std::size_t round = 0; round < kRounds; ++round) {
                const auto seed = static_cast<std::uint32_t>(t * 1000 + round);
                fill(out.bytes(), seed);
                // Pages in reverse order, as single pages and 64 KiB runs alternately.
                std::vector<CopyOp> ops;
                const std::size_t run = round % 2 ? 16 : 1;
                for (std::size_t p = 0; p < kPagesPerThread; p += run) {
                    const std::size_t dev = (t + 1) * kPagesPerThread - p - run;
                    ops.push_back({out.data() + p * kPage, dev * kPage, static_cast<std::uint32_t>(run * kPage)});
                }
                auto to = engine.submit(Direction::to_device, ops);
                if (to.wait()) failed_ops += to.failed();
                std::vector<CopyOp> rops = ops;
                for (auto& op : rops) op.host = back.data() + (static_cast<std::byte*>(op.host) - out.data());
                auto from = engine.submit(Direction::to_host, rops);
                if (from.wait()) failed_ops += from.failed();
                if (checksum(back.bytes()) != checksum(out.bytes())) ++bad;
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(failed_ops == 0);
    CHECK(bad == 0);
}

TEST_CASE("a fence submitted on one thread is waited on by another") {
    auto arena = FileArena::create(4u << 20);
    REQUIRE(arena);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    auto host = map_anon(4u << 20);
    fill(host.bytes(), 51);
    std::vector<CopyOp> ops;
    for (std::size_t p = 0; p < 1024; ++p) ops.push_back({host.data() + p * kPage, p * kPage, kPage});
    auto fence = (*e)->submit(Direction::to_device, ops);
    std::error_code seen;
    std::thread waiter([&] { seen = fence.wait(); });
    waiter.join();
    CHECK_FALSE(seen);
    CHECK(fence.bytes() == (4u << 20));
    CHECK(mismatch(arena->map.bytes(), 51) == -1);
}

TEST_CASE("destroying an engine waits for the batches in flight") {
    auto arena = FileArena::create(8u << 20);
    REQUIRE(arena);
    auto host = map_anon(8u << 20);
    fill(host.bytes(), 61);
    std::vector<migrate::Fence> fences;
    {
        auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
        REQUIRE(e.ok());
        for (std::size_t c = 0; c < 4; ++c) {
            const CopyOp op{host.data() + c * (2u << 20), c * (2u << 20), 2u << 20};
            fences.push_back((*e)->submit(Direction::to_device, {&op, 1}));
        }
    }
    for (auto& f : fences) {
        CHECK(f.poll());
        CHECK_FALSE(f.error());
    }
    CHECK(mismatch(arena->map.bytes(), 61) == -1);
}
