// The device-page allocator through the Arena API, on small memfd arenas:
// refcounts, owners, the free callback, exhaustion, growth, runs, counters.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <set>
#include <vector>

#include "arena_util.hpp"

using namespace uhmm::devmem;
using uhmm::devmem::test::make_arena;
using uhmm::devmem::test::memfd_spec;

namespace {

int token_a, token_b;   // owner tokens: only their addresses matter

struct Frees {
    std::vector<std::pair<PageIndex, const void*>> calls;
    PageFreeFn fn() {
        return [this](PageIndex page, const void* owner) { calls.emplace_back(page, owner); };
    }
};

std::vector<PageIndex> alloc_n(Arena& arena, OwnerId owner, std::size_t n) {
    std::vector<PageIndex> pages;
    for (std::size_t i = 0; i < n; ++i) {
        auto page = arena.alloc(owner);
        REQUIRE(page.ok());
        pages.push_back(*page);
    }
    return pages;
}

}  // namespace

TEST_CASE("a new arena has its initial chunks mapped, at a 2 MiB aligned base, and nothing allocated") {
    auto arena = make_arena(memfd_spec(8 << 20, 4 << 20));
    const auto s = arena->stats();
    CHECK(s.limit_pages == 2048);
    CHECK(s.chunks == 2);
    CHECK(s.capacity_pages == 1024);
    CHECK(s.used_pages == 0);
    CHECK(s.high_water_pages == 0);
    const auto v = arena->view();
    CHECK(v.kind == ArenaKind::memfd);
    CHECK(v.fd >= 0);
    CHECK(v.size == (4u << 20));
    REQUIRE(v.base != nullptr);
    CHECK(reinterpret_cast<std::uintptr_t>(v.base) % kChunkSize == 0);
}

TEST_CASE("a page comes out with one reference and its owner's token") {
    auto arena = make_arena(memfd_spec(4 << 20));
    const auto owner = arena->add_owner(&token_a).value();
    const auto page = arena->alloc(owner).value();
    CHECK(arena->refcount(page) == 1);
    CHECK(arena->owner(page) == &token_a);
    CHECK(arena->owner_id(page) == owner);
    CHECK(arena->owner_token(owner) == &token_a);
    CHECK(arena->stats().used_pages == 1);
    CHECK(arena->put(page) == std::error_code{});
}

TEST_CASE("get and put count references and the last put frees the page") {
    auto arena = make_arena(memfd_spec(4 << 20));
    Frees frees;
    const auto owner = arena->add_owner(&token_a, frees.fn()).value();
    const auto page = arena->alloc(owner).value();
    REQUIRE_FALSE(arena->get(page));
    REQUIRE_FALSE(arena->get(page));
    CHECK(arena->refcount(page) == 3);
    REQUIRE_FALSE(arena->put(page));
    REQUIRE_FALSE(arena->put(page));
    CHECK(arena->refcount(page) == 1);
    CHECK(frees.calls.empty());
    REQUIRE_FALSE(arena->put(page));
    CHECK(arena->refcount(page) == 0);
    CHECK(arena->owner(page) == nullptr);
    CHECK(arena->stats().used_pages == 0);
    CHECK(frees.calls.size() == 1);
}

TEST_CASE("the free callback runs exactly once, with the page and its owner's token") {
    auto arena = make_arena(memfd_spec(4 << 20));
    Frees frees_a, frees_b;
    const auto a = arena->add_owner(&token_a, frees_a.fn()).value();
    const auto b = arena->add_owner(&token_b, frees_b.fn()).value();
    const auto pa = arena->alloc(a).value();
    const auto pb = arena->alloc(b).value();
    REQUIRE_FALSE(arena->put(pa));
    // A put too many is refused and does not call back again.
    CHECK(arena->put(pa) == Errc::page_not_allocated);
    REQUIRE(frees_a.calls.size() == 1);
    CHECK(frees_a.calls[0] == std::pair<PageIndex, const void*>{pa, &token_a});
    CHECK(frees_b.calls.empty());
    REQUIRE_FALSE(arena->put(pb));
    REQUIRE(frees_b.calls.size() == 1);
    CHECK(frees_b.calls[0] == std::pair<PageIndex, const void*>{pb, &token_b});
    CHECK(frees_a.calls.size() == 1);
}

TEST_CASE("the free callback runs before the page can be allocated again, and may allocate") {
    auto arena = make_arena(memfd_spec(kChunkSize));   // one chunk, no growth
    std::vector<std::error_code> inside;
    Arena* raw = arena.get();
    OwnerId owner;
    owner = arena->add_owner(&token_a, [&](PageIndex, const void*) {
                      auto again = raw->alloc(owner);   // the freed page is not back yet
                      inside.push_back(again.error());
                  }).value();
    auto pages = alloc_n(*arena, owner, kPagesPerChunk);
    REQUIRE_FALSE(arena->put(pages.back()));
    REQUIRE(inside.size() == 1);
    CHECK(inside[0] == Errc::arena_full);
    const auto reused = arena->alloc(owner).value();   // now it is
    CHECK(reused == pages.back());
}

TEST_CASE("references to free or out-of-range pages are refused as invalid") {
    auto arena = make_arena(memfd_spec(4 << 20));
    CHECK(arena->get(7) == Errc::page_not_allocated);
    CHECK(arena->put(7) == Errc::page_not_allocated);
    CHECK(arena->get(7) == std::errc::invalid_argument);
    CHECK(arena->get(512) == Errc::bad_page);     // beyond the one mapped chunk
    CHECK(arena->put(1u << 30) == Errc::bad_page);
    CHECK(arena->refcount(1u << 30) == 0);
    CHECK(arena->owner(1u << 30) == nullptr);
    CHECK(arena->address(512) == nullptr);
    CHECK(arena->stats().used_pages == 0);
}

TEST_CASE("an exhausted arena says it is full, as ENOMEM, counts it, and recovers after a free") {
    auto arena = make_arena(memfd_spec(4 << 20));
    const auto owner = arena->add_owner(&token_a).value();
    auto pages = alloc_n(*arena, owner, 2 * kPagesPerChunk);
    const auto full = arena->alloc(owner);
    REQUIRE_FALSE(full.ok());
    CHECK(full.error() == Errc::arena_full);
    CHECK(full.error() == std::errc::not_enough_memory);
    CHECK(full.error().message().find("full") != std::string::npos);
    CHECK(arena->stats().alloc_failures == 1);
    CHECK(arena->stats().used_pages == 2 * kPagesPerChunk);
    REQUIRE_FALSE(arena->put(pages[100]));
    CHECK(arena->alloc(owner).value() == pages[100]);
    CHECK(arena->stats().alloc_failures == 1);
}

TEST_CASE("the arena grows a chunk at a time up to its limit without moving its base") {
    auto arena = make_arena(memfd_spec(8 << 20));
    const auto owner = arena->add_owner(&token_a).value();
    std::byte* const base = arena->view().base;
    auto pages = alloc_n(*arena, owner, kPagesPerChunk + 1);
    CHECK(arena->stats().chunks == 2);
    CHECK(arena->view().size == 2 * kChunkSize);
    CHECK(arena->view().base == base);
    for (const PageIndex p : pages) {
        std::byte* at = arena->address(p);
        REQUIRE(at == base + ArenaView::offset_of(p));
        std::memset(at, 0x5a, kPageSize);   // mapped, writable
    }
    REQUIRE_FALSE(arena->grow(8 << 20));
    CHECK(arena->stats().chunks == 4);
    CHECK(arena->view().base == base);
    CHECK(arena->grow(10 << 20) == Errc::arena_full);
}

TEST_CASE("every page of a full arena is handed out once") {
    auto arena = make_arena(memfd_spec(8 << 20));
    const auto owner = arena->add_owner(&token_a).value();
    auto pages = alloc_n(*arena, owner, 4 * kPagesPerChunk);
    const std::set<PageIndex> distinct(pages.begin(), pages.end());
    CHECK(distinct.size() == pages.size());
    CHECK(*distinct.rbegin() == 4 * kPagesPerChunk - 1);
}

TEST_CASE("the high-water mark keeps the most pages ever in use") {
    auto arena = make_arena(memfd_spec(4 << 20));
    const auto owner = arena->add_owner(&token_a).value();
    auto pages = alloc_n(*arena, owner, 10);
    for (int i = 0; i < 5; ++i) REQUIRE_FALSE(arena->put(pages[i]));
    alloc_n(*arena, owner, 2);
    const auto s = arena->stats();
    CHECK(s.used_pages == 7);
    CHECK(s.high_water_pages == 10);
}

TEST_CASE("a run from fresh chunks is contiguous, even across chunks") {
    auto arena = make_arena(memfd_spec(16 << 20));
    const auto owner = arena->add_owner(&token_a).value();
    std::vector<PageIndex> run(100);
    CHECK(arena->alloc_run(100, owner, run).value() == 1);
    for (std::size_t i = 1; i < run.size(); ++i) CHECK(run[i] == run[0] + i);
    for (const PageIndex p : run) CHECK(arena->refcount(p) == 1);

    std::vector<PageIndex> big(2 * kPagesPerChunk);
    CHECK(arena->alloc_run(big.size(), owner, big).value() == 1);
    for (std::size_t i = 1; i < big.size(); ++i) REQUIRE(big[i] == big[0] + i);
    CHECK(arena->stats().runs_contiguous == 2);
    CHECK(arena->stats().used_pages == 100 + 2 * kPagesPerChunk);
}

TEST_CASE("a run falls back to scattered pages when no contiguous space is left") {
    auto arena = make_arena(memfd_spec(kChunkSize));
    Frees frees;
    const auto owner = arena->add_owner(&token_a, frees.fn()).value();
    auto pages = alloc_n(*arena, owner, kPagesPerChunk);
    std::set<PageIndex> freed;
    for (std::size_t i = 0; i < pages.size(); i += 2) {
        REQUIRE_FALSE(arena->put(pages[i]));
        freed.insert(pages[i]);
    }
    std::vector<PageIndex> run(10);
    CHECK(arena->alloc_run(10, owner, run).value() == 10);
    for (const PageIndex p : run) CHECK(freed.count(p) == 1);
    CHECK(std::set<PageIndex>(run.begin(), run.end()).size() == 10);
    CHECK(arena->stats().runs_scattered == 1);
}

TEST_CASE("a run that cannot be satisfied takes nothing") {
    auto arena = make_arena(memfd_spec(kChunkSize));
    const auto owner = arena->add_owner(&token_a).value();
    alloc_n(*arena, owner, 500);
    std::vector<PageIndex> run(20);
    const auto r = arena->alloc_run(20, owner, run);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error() == Errc::arena_full);
    CHECK(arena->stats().used_pages == 500);
    CHECK(arena->stats().alloc_failures == 1);
    CHECK(alloc_n(*arena, owner, 12).size() == 12);   // the 12 left are all still there
    std::vector<PageIndex> too_big(kPagesPerChunk + 1);
    CHECK(arena->alloc_run(too_big.size(), owner, too_big).error() == Errc::arena_full);
    CHECK(arena->alloc_run(5, owner, std::span<PageIndex>(too_big).first(4)).error() ==
          std::errc::invalid_argument);
}

TEST_CASE("a chunk whose pages are all freed is one contiguous run again") {
    auto arena = make_arena(memfd_spec(kChunkSize));
    const auto owner = arena->add_owner(&token_a).value();
    auto pages = alloc_n(*arena, owner, kPagesPerChunk);
    std::reverse(pages.begin(), pages.end());
    for (const PageIndex p : pages) REQUIRE_FALSE(arena->put(p));
    std::vector<PageIndex> run(kPagesPerChunk);
    CHECK(arena->alloc_run(run.size(), owner, run).value() == 1);
    CHECK(run.front() == 0);
}

TEST_CASE("single allocations reuse freed pages before untouched ones") {
    auto arena = make_arena(memfd_spec(kChunkSize));
    const auto owner = arena->add_owner(&token_a).value();
    auto pages = alloc_n(*arena, owner, 8);
    REQUIRE_FALSE(arena->put(pages[3]));
    CHECK(arena->alloc(owner).value() == pages[3]);
}

TEST_CASE("owners are registered once each and an unknown owner cannot allocate") {
    auto arena = make_arena(memfd_spec(kChunkSize));
    CHECK(arena->add_owner(nullptr).error() == Errc::bad_owner);
    REQUIRE(arena->add_owner(&token_a).ok());
    CHECK(arena->add_owner(&token_a).error() == Errc::bad_owner);
    CHECK(arena->alloc(OwnerId{}).error() == Errc::bad_owner);
    CHECK(arena->alloc(OwnerId{99}).error() == Errc::bad_owner);
    CHECK(arena->owner_token(OwnerId{99}) == nullptr);
    static char tokens[kMaxOwners];
    for (std::size_t i = 2; i < kMaxOwners; ++i) REQUIRE(arena->add_owner(&tokens[i]).ok());
    CHECK(arena->add_owner(&tokens[0]).error() == Errc::owner_table_full);
    CHECK(arena->add_owner(&tokens[0]).error() == std::errc::no_space_on_device);
    CHECK(arena->stats().used_pages == 0);
}

TEST_CASE("destroying an arena with pages allocated runs none of their callbacks") {
    Frees frees;
    {
        auto arena = make_arena(memfd_spec(kChunkSize));
        const auto owner = arena->add_owner(&token_a, frees.fn()).value();
        alloc_n(*arena, owner, 3);
    }
    CHECK(frees.calls.empty());
}

TEST_CASE("an initial size beyond the limit, or a limit that is not whole chunks, is refused") {
    std::string why;
    auto spec = memfd_spec(4 << 20, 6 << 20);
    CHECK(Arena::create(spec, &why).error() == std::errc::invalid_argument);
    CHECK(why.find("exceeds arena_size") != std::string::npos);
    spec = memfd_spec(3 << 20);
    CHECK(Arena::create(spec, &why).error() == std::errc::invalid_argument);
    CHECK(why.find("multiple of 2 MiB") != std::string::npos);
}
