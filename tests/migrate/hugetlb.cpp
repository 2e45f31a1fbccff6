// The hugetlb arena: no kernel write path into hugetlbfs, so host → device
// goes by memcpy on the io_uring engine's CPU worker (asynchronously, fence
// and all) while device → host stays an io_uring READ. Needs root to reserve
// huge pages; skipped (77) with the reason otherwise.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <numeric>
#include <random>
#include <vector>

#include "arena_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;
using migrate::CopyOp;
using migrate::Direction;
using migrate::EngineKind;

namespace {

constexpr std::size_t kArenaBytes = 8u << 20;   // 4 huge pages
HugePageReservation reservation;                // given back at exit
// One arena for the whole binary: a freed huge page is not back in the pool
// at once (measured: it returns a moment later), so arenas made and dropped
// case after case would run the small reservation dry.
std::optional<FileArena> shared_arena;

FileArena& arena_with(std::uint8_t fill_byte) {
    std::memset(shared_arena->map.data(), fill_byte, shared_arena->map.size());
    return *shared_arena;
}

}  // namespace

std::optional<std::string> uhmm_test_skip_reason() {
    if (::geteuid() != 0) return "reserving huge pages needs root";
    if (auto why = reservation.reserve(kArenaBytes / devmem::kChunkSize)) return *why;
    shared_arena = FileArena::create(kArenaBytes, true);
    if (!shared_arena) return "a MFD_HUGETLB memfd could not be created and mapped";
    return std::nullopt;
}

TEST_CASE("the kernel still refuses writes into a hugetlb memfd") {
    // If this starts passing, the CPU path for hugetlb can go.
    auto* arena = &arena_with(0);
    std::byte page[kPage]{};
    CHECK(::pwrite(arena->fd.get(), page, sizeof page, 0) == -1);
    CHECK(errno == EINVAL);
}

TEST_CASE("scattered pages and a 2 MiB run reach a hugetlb arena and come back byte for byte") {
    const auto kind = GENERATE(EngineKind::uring, EngineKind::memcpy);
    auto* arena = &arena_with(0);
    auto e = migrate::make_copy_engine(kind, arena->view);
    REQUIRE(e.ok());
    auto& engine = **e;

    std::vector<std::uint32_t> pages(devmem::kChunkSize / kPage);   // in the first huge page
    std::iota(pages.begin(), pages.end(), 0u);
    std::shuffle(pages.begin(), pages.end(), std::mt19937(7));
    pages.resize(100);
    auto host = map_anon(pages.size() * kPage + devmem::kChunkSize);
    fill(host.bytes(), 71);
    std::vector<CopyOp> ops;
    for (std::size_t i = 0; i < pages.size(); ++i)
        ops.push_back({host.data() + i * kPage, devmem::ArenaView::offset_of(pages[i]), kPage});
    ops.push_back({host.data() + pages.size() * kPage, 2 * devmem::kChunkSize,
                   static_cast<std::uint32_t>(devmem::kChunkSize)});
    auto to = engine.submit(Direction::to_device, ops);
    REQUIRE_FALSE(to.wait());
    CHECK(to.bytes() == pages.size() * kPage + devmem::kChunkSize);
    for (std::size_t i = 0; i < pages.size(); ++i)
        CHECK(std::memcmp(arena->map.data() + pages[i] * kPage, host.data() + i * kPage, kPage) == 0);

    auto back = map_anon(host.size());
    std::vector<CopyOp> rops = ops;
    for (auto& op : rops) op.host = back.data() + (static_cast<std::byte*>(op.host) - host.data());
    auto from = engine.submit(Direction::to_host, rops);
    REQUIRE_FALSE(from.wait());
    CHECK(mismatch(back.bytes(), 71) == -1);
}

TEST_CASE("a hugetlb write batch on the io_uring engine signals its fence asynchronously") {
    auto* arena = &arena_with(0);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    auto host = map_anon(kArenaBytes);
    fill(host.bytes(), 72);
    const CopyOp op{host.data(), 0, static_cast<std::uint32_t>(kArenaBytes)};
    std::atomic<int> calls{0};
    auto fence = (*e)->submit(Direction::to_device, {&op, 1});
    fence.on_complete([&](const migrate::Fence& f) {
        if (!f.error()) ++calls;
    });
    REQUIRE_FALSE(fence.wait());
    for (int i = 0; i < 10000 && calls == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(calls == 1);
    CHECK(mismatch(arena->map.bytes(), 72) == -1);
}

TEST_CASE("an op past a hugetlb arena's end fails with ERANGE on the CPU path too") {
    auto* arena = &arena_with(0);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    auto host = map_anon(2 * kPage);
    const std::vector<CopyOp> ops{{host.data(), kArenaBytes - kPage, kPage}, {host.data(), kArenaBytes, kPage}};
    auto fence = (*e)->submit(Direction::to_device, ops);
    CHECK(fence.wait() == std::errc::result_out_of_range);
    CHECK_FALSE(fence.results()[0].error);
    CHECK(fence.results()[1].error == std::errc::result_out_of_range);
}

TEST_CASE("an unreadable host page on the hugetlb write path is EFAULT for that op alone") {
    auto* arena = &arena_with(0);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    auto host = map_anon(3 * kPage);
    fill(host.bytes(), 73);
    // PROT_NONE, not munmap: the hole must not be reused by another mapping.
    REQUIRE(::mprotect(host.data() + kPage, kPage, PROT_NONE) == 0);
    const std::vector<CopyOp> ops{{host.data(), 0, kPage}, {host.data() + kPage, kPage, kPage},
                                  {host.data() + 2 * kPage, 2 * kPage, kPage}};
    auto fence = (*e)->submit(Direction::to_device, ops);
    CHECK(fence.wait() == std::errc::bad_address);
    CHECK(fence.failed() == 1);
    CHECK(fence.results()[1].error == std::errc::bad_address);
    CHECK(std::memcmp(arena->map.data(), host.data(), kPage) == 0);
    CHECK(std::memcmp(arena->map.data() + 2 * kPage, host.data() + 2 * kPage, kPage) == 0);
}
