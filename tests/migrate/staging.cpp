// Staging buffers: the engine's own (registered / pinned) memory, handed out
// by slot, used as the destination of to_host copies the runtime keeps.
#include <catch2/catch.hpp>

#include <vector>

#include "arena_fixture.hpp"

using namespace uhmm;
using namespace uhmm::test;
using migrate::CopyOp;
using migrate::Direction;
using migrate::EngineKind;

TEST_CASE("a read into a staging buffer lands byte for byte") {
    // io_uring (READ_FIXED), io_uring's CPU worker (memcpy on runtime memory), memcpy.
    const int mode = GENERATE(0, 1, 2);
    auto arena = FileArena::create(8u << 20);
    REQUIRE(arena);
    fill(arena->map.bytes(), 11);
    migrate::EngineOptions opts;
    opts.cpu_worker = mode == 1;
    auto e = migrate::make_copy_engine(mode == 2 ? EngineKind::memcpy : EngineKind::uring, arena->view, opts);
    REQUIRE(e.ok());
    auto buf = (*e)->acquire_staging();
    REQUIRE(buf.ok());
    REQUIRE(buf->size() == devmem::kChunkSize);
    // A 2 MiB read wholly inside the (registered) buffer, and two pages that
    // end at its last byte.
    const CopyOp whole{buf->data(), 2u << 20, static_cast<std::uint32_t>(buf->size())};
    REQUIRE_FALSE((*e)->submit(Direction::to_host, {&whole, 1}).wait());
    CHECK(std::memcmp(buf->data(), arena->map.data() + (2u << 20), buf->size()) == 0);
    const CopyOp tail{buf->data() + buf->size() - 2 * kPage, 0, 2 * kPage};
    REQUIRE_FALSE((*e)->submit(Direction::to_host, {&tail, 1}).wait());
    CHECK(std::memcmp(buf->data() + buf->size() - 2 * kPage, arena->map.data(), 2 * kPage) == 0);
}

TEST_CASE("a write from a staging buffer lands byte for byte") {
    auto arena = FileArena::create(4u << 20);
    REQUIRE(arena);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    auto buf = (*e)->acquire_staging();
    REQUIRE(buf.ok());
    fill(buf->bytes(), 12);
    const CopyOp op{buf->data(), 1u << 20, static_cast<std::uint32_t>(buf->size())};
    REQUIRE_FALSE((*e)->submit(Direction::to_device, {&op, 1}).wait());
    CHECK(mismatch(arena->map.bytes().subspan(1u << 20, buf->size()), 12) == -1);
}

TEST_CASE("staging buffers run out with EAGAIN and come back when released") {
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    migrate::EngineOptions opts;
    opts.staging_slots = 2;
    opts.staging_slot_bytes = 64 * 1024;
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view, opts);
    REQUIRE(e.ok());
    auto a = (*e)->acquire_staging();
    auto b = (*e)->acquire_staging();
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(a->data() != b->data());
    CHECK(a->size() == 64 * 1024);
    CHECK((*e)->acquire_staging().error() == std::errc::resource_unavailable_try_again);
    { auto gone = std::move(*a); }
    auto c = (*e)->acquire_staging();
    CHECK(c.ok());
}

TEST_CASE("an engine made without staging says ENOSPC") {
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    migrate::EngineOptions opts;
    opts.staging_slots = 0;
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view, opts);
    REQUIRE(e.ok());
    CHECK((*e)->acquire_staging().error() == std::errc::no_space_on_device);
}
