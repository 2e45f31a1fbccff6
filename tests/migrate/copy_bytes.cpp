// Copy engines move exact bytes: one page, scattered pages, 2 MiB runs, both
// directions, for every engine that works on a shmem arena (io_uring and
// memcpy), plus the numa (anonymous) arena served by memcpy.
#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "arena_fixture.hpp"

using namespace uhmm;
using namespace uhmm::test;
using migrate::CopyOp;
using migrate::Direction;
using migrate::EngineKind;

namespace {

constexpr std::size_t kArenaBytes = 16u << 20;

std::unique_ptr<migrate::CopyEngine> engine_for(EngineKind kind, const devmem::ArenaView& view,
                                                migrate::EngineOptions opts = {}) {
    auto e = migrate::make_copy_engine(kind, view, opts);
    INFO("engine " << kind_name(kind) << ": " << e.error().message());
    REQUIRE(e.ok());
    REQUIRE((*e)->kind() == kind);
    return std::move(*e);
}

}  // namespace

TEST_CASE("a single 4 KiB page reaches the arena byte for byte") {
    const auto kind = GENERATE(EngineKind::uring, EngineKind::memcpy);
    auto arena = FileArena::create(kArenaBytes);
    REQUIRE(arena);
    auto engine = engine_for(kind, arena->view);
    auto host = map_anon(kPage);
    fill(host.bytes(), 1);
    const CopyOp op{host.data(), devmem::ArenaView::offset_of(7), kPage};
    auto fence = engine->submit(Direction::to_device, {&op, 1});
    REQUIRE_FALSE(fence.wait());
    CHECK(fence.bytes() == kPage);
    CHECK(mismatch(arena->map.bytes().subspan(7 * kPage, kPage), 1) == -1);
}

TEST_CASE("scattered 4 KiB pages land on their own device pages and nowhere else") {
    const auto kind = GENERATE(EngineKind::uring, EngineKind::memcpy);
    auto arena = FileArena::create(kArenaBytes);
    REQUIRE(arena);
    std::memset(arena->map.data(), 0xEE, arena->map.size());
    auto engine = engine_for(kind, arena->view);

    const std::size_t n = 300;
    std::vector<std::uint32_t> pages(kArenaBytes / kPage);
    std::iota(pages.begin(), pages.end(), 0u);
    std::shuffle(pages.begin(), pages.end(), std::mt19937(42));
    pages.resize(n);
    auto host = map_anon(n * kPage);
    std::vector<CopyOp> ops;
    for (std::size_t i = 0; i < n; ++i) {
        fill(host.bytes().subspan(i * kPage, kPage), static_cast<std::uint32_t>(100 + i));
        ops.push_back({host.data() + i * kPage, devmem::ArenaView::offset_of(pages[i]), kPage});
    }
    auto fence = engine->submit(Direction::to_device, ops);
    REQUIRE_FALSE(fence.wait());
    REQUIRE(fence.size() == n);
    for (std::size_t i = 0; i < n; ++i) {
        INFO("op " << i << " → device page " << pages[i]);
        CHECK(fence.results()[i].bytes == kPage);
        CHECK(mismatch(arena->map.bytes().subspan(pages[i] * kPage, kPage), static_cast<std::uint32_t>(100 + i)) == -1);
    }
    // Every page that no op named still holds the sentinel.
    std::vector<bool> written(kArenaBytes / kPage);
    for (auto p : pages) written[p] = true;
    std::size_t untouched_bad = 0;
    for (std::size_t p = 0; p < written.size(); ++p) {
        if (written[p]) continue;
        const auto* b = arena->map.data() + p * kPage;
        untouched_bad += std::any_of(b, b + kPage, [](std::byte c) { return c != std::byte{0xEE}; }) ? 1 : 0;
    }
    CHECK(untouched_bad == 0);
}

TEST_CASE("a 2 MiB batch to the arena lands byte for byte") {
    const auto kind = GENERATE(EngineKind::uring, EngineKind::memcpy);
    auto arena = FileArena::create(kArenaBytes);
    REQUIRE(arena);
    auto engine = engine_for(kind, arena->view);
    auto host = map_anon(devmem::kChunkSize);
    fill(host.bytes(), 7);
    const CopyOp op{host.data(), 3 * devmem::kChunkSize, static_cast<std::uint32_t>(devmem::kChunkSize)};
    auto fence = engine->submit(Direction::to_device, {&op, 1});
    REQUIRE_FALSE(fence.wait());
    CHECK(fence.bytes() == devmem::kChunkSize);
    CHECK(mismatch(arena->map.bytes().subspan(3 * devmem::kChunkSize, devmem::kChunkSize), 7) == -1);
}

TEST_CASE("device pages read back to the host match what the arena holds") {
    const auto kind = GENERATE(EngineKind::uring, EngineKind::memcpy);
    auto arena = FileArena::create(kArenaBytes);
    REQUIRE(arena);
    for (std::size_t p = 0; p < kArenaBytes / kPage; ++p)
        fill(arena->map.bytes().subspan(p * kPage, kPage), static_cast<std::uint32_t>(p));
    auto engine = engine_for(kind, arena->view);

    // Scattered single pages, then a 2 MiB run, in one batch.
    const std::vector<std::uint32_t> pages{4095, 0, 17, 1024, 3, 2048};
    auto host = map_anon(pages.size() * kPage + devmem::kChunkSize);
    std::vector<CopyOp> ops;
    for (std::size_t i = 0; i < pages.size(); ++i)
        ops.push_back({host.data() + i * kPage, devmem::ArenaView::offset_of(pages[i]), kPage});
    std::byte* run = host.data() + pages.size() * kPage;
    ops.push_back({run, devmem::kChunkSize, static_cast<std::uint32_t>(devmem::kChunkSize)});
    auto fence = engine->submit(Direction::to_host, ops);
    REQUIRE_FALSE(fence.wait());
    for (std::size_t i = 0; i < pages.size(); ++i)
        CHECK(mismatch(host.bytes().subspan(i * kPage, kPage), pages[i]) == -1);
    for (std::size_t p = 0; p < devmem::kChunkSize / kPage; ++p)
        CHECK(mismatch({run + p * kPage, kPage}, static_cast<std::uint32_t>(devmem::kChunkSize / kPage + p)) == -1);
}

TEST_CASE("a batch far larger than the queue depth completes every op") {
    auto arena = FileArena::create(kArenaBytes);
    REQUIRE(arena);
    migrate::EngineOptions opts;
    opts.queue_depth = 4;
    auto engine = engine_for(EngineKind::uring, arena->view, opts);
    const std::size_t n = kArenaBytes / kPage;
    auto host = map_anon(kArenaBytes);
    fill(host.bytes(), 9);
    std::vector<CopyOp> ops;
    for (std::size_t i = 0; i < n; ++i) ops.push_back({host.data() + i * kPage, i * kPage, kPage});
    auto fence = engine->submit(Direction::to_device, ops);
    REQUIRE_FALSE(fence.wait());
    CHECK(fence.bytes() == kArenaBytes);
    CHECK(mismatch(arena->map.bytes(), 9) == -1);
}

TEST_CASE("an anonymous (numa) arena is served by the memcpy engine") {
    auto arena = AnonArena::create(4u << 20);
    auto e = migrate::make_copy_engine(EngineKind::automatic, arena.view);
    REQUIRE(e.ok());
    CHECK((*e)->kind() == EngineKind::memcpy);
    auto host = map_anon(64 * 1024);
    fill(host.bytes(), 5);
    const CopyOp op{host.data(), 1u << 20, 64 * 1024};
    REQUIRE_FALSE((*e)->submit(Direction::to_device, {&op, 1}).wait());
    CHECK(mismatch(arena.map.bytes().subspan(1u << 20, 64 * 1024), 5) == -1);
}

TEST_CASE("io_uring is chosen automatically for a memfd arena when it works here") {
    auto arena = FileArena::create(kArenaBytes);
    REQUIRE(arena);
    INFO(migrate::uring_support().reason);
    REQUIRE(migrate::uring_support().available);
    auto e = migrate::make_copy_engine(EngineKind::automatic, arena->view);
    REQUIRE(e.ok());
    CHECK((*e)->kind() == EngineKind::uring);
    CHECK((*e)->name() == "io_uring");
}

TEST_CASE("an engine that does not fit the arena is refused with ENOTSUP") {
    auto anon = AnonArena::create(1u << 20);
    CHECK(migrate::make_copy_engine(EngineKind::uring, anon.view).error() == std::errc::not_supported);
    devmem::ArenaView cuda;
    cuda.kind = devmem::ArenaKind::cuda;
    CHECK(migrate::make_copy_engine(EngineKind::memcpy, cuda).error() == std::errc::not_supported);
}

TEST_CASE("bad engine options are refused with EINVAL") {
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    migrate::EngineOptions opts;
    opts.queue_depth = 0;
    CHECK(migrate::make_copy_engine(EngineKind::uring, arena->view, opts).error() == std::errc::invalid_argument);
    opts = {};
    opts.staging_slot_bytes = 1000;
    CHECK(migrate::make_copy_engine(EngineKind::memcpy, arena->view, opts).error() == std::errc::invalid_argument);
}

TEST_CASE("an io_uring engine cannot be made on a closed arena fd") {
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    auto view = arena->view;
    view.fd = ::dup(arena->fd.get());
    ::close(view.fd);   // a descriptor number that is certainly not open now
    CHECK(migrate::make_copy_engine(EngineKind::uring, view).error() == std::errc::bad_file_descriptor);
}

TEST_CASE("a growing arena accepts ops up to its new size") {
    const auto kind = GENERATE(EngineKind::uring, EngineKind::memcpy);
    auto arena = FileArena::create(4u << 20);
    REQUIRE(arena);
    auto view = arena->view;
    view.size = 2u << 20;   // the engine first knows only the first chunk
    auto engine = engine_for(kind, view);
    auto host = map_anon(kPage);
    fill(host.bytes(), 3);
    const CopyOp op{host.data(), 3u << 20, kPage};
    auto before = engine->submit(Direction::to_device, {&op, 1});
    CHECK(before.wait() == std::errc::result_out_of_range);
    engine->set_arena_size(4u << 20);
    CHECK_FALSE(engine->submit(Direction::to_device, {&op, 1}).wait());
    CHECK(mismatch(arena->map.bytes().subspan(3u << 20, kPage), 3) == -1);
}

TEST_CASE("the io_uring engine's CPU-worker mode moves exact bytes both ways, asynchronously") {
    auto arena = FileArena::create(kArenaBytes);
    REQUIRE(arena);
    migrate::EngineOptions opts;
    opts.cpu_worker = true;
    auto engine = engine_for(EngineKind::uring, arena->view, opts);
    std::vector<std::uint32_t> pages{9, 2, 4000, 77};
    auto host = map_anon(pages.size() * kPage);
    fill(host.bytes(), 13);
    std::vector<CopyOp> ops;
    for (std::size_t i = 0; i < pages.size(); ++i)
        ops.push_back({host.data() + i * kPage, devmem::ArenaView::offset_of(pages[i]), kPage});
    REQUIRE_FALSE(engine->submit(Direction::to_device, ops).wait());
    for (std::size_t i = 0; i < pages.size(); ++i)
        CHECK(std::memcmp(arena->map.data() + pages[i] * kPage, host.data() + i * kPage, kPage) == 0);
    auto back = map_anon(host.size());
    for (auto& op : ops) op.host = back.data() + (static_cast<std::byte*>(op.host) - host.data());
    REQUIRE_FALSE(engine->submit(Direction::to_host, ops).wait());
    CHECK(mismatch(back.bytes(), 13) == -1);
}
