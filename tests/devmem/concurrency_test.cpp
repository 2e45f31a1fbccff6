// The allocator under real threads: alloc/free storms, racing puts, runs.
// Each thread stamps the pages it holds through the arena's mapping and checks
// the stamp before freeing, and a shared claim table catches a page handed to
// two holders at once; counters must add up when the threads are done.
// Catch2's assertions are not thread-safe: workers count, the main thread checks.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "arena_util.hpp"

using namespace uhmm::devmem;
using uhmm::devmem::test::make_arena;
using uhmm::devmem::test::memfd_spec;

namespace {

constexpr int kThreads = 4;
int token;

struct Stamp {
    std::uint64_t thread;
    std::uint64_t serial;
};

// Holders of pages: claim on alloc, check and release on free.
class Claims {
public:
    explicit Claims(std::size_t pages) : claimed_(pages) {}
    void take(PageIndex page) {
        if (claimed_[page].exchange(1, std::memory_order_relaxed) != 0) doubles_.fetch_add(1);
    }
    void drop(PageIndex page) { claimed_[page].store(0, std::memory_order_relaxed); }
    int doubles() const { return doubles_.load(); }

private:
    std::vector<std::atomic<std::uint8_t>> claimed_;
    std::atomic<int> doubles_{0};
};

struct Held {
    PageIndex page;
    Stamp stamp;
};

void stamp(Arena& arena, Held& h) { std::memcpy(arena.address(h.page), &h.stamp, sizeof h.stamp); }

bool stamp_intact(Arena& arena, const Held& h) {
    Stamp now;
    std::memcpy(&now, arena.address(h.page), sizeof now);
    return now.thread == h.stamp.thread && now.serial == h.stamp.serial;
}

}  // namespace

TEST_CASE("threads allocating and freeing at once never share a page, and the counters add up") {
    // 4 chunks for 4 threads that may each hold up to 600 pages: the arena
    // grows while they run and is sometimes full.
    auto arena = make_arena(memfd_spec(8 << 20));
    std::atomic<std::size_t> frees{0};
    const auto owner = arena->add_owner(&token, [&](PageIndex, const void*) { frees.fetch_add(1); }).value();
    Claims claims(arena->stats().limit_pages);
    std::atomic<std::size_t> full{0}, allocs{0}, corrupt{0}, put_errors{0};

    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t) + 1);
            std::vector<Held> held;
            std::uint64_t serial = 0;
            for (int i = 0; i < 20000; ++i) {
                const bool want_alloc = held.empty() || (held.size() < 600 && rng() % 100 < 55);
                if (want_alloc) {
                    auto page = arena->alloc(owner);
                    if (!page) {
                        if (page.error() == Errc::arena_full) full.fetch_add(1);
                        continue;
                    }
                    allocs.fetch_add(1);
                    claims.take(*page);
                    held.push_back({*page, {static_cast<std::uint64_t>(t), ++serial}});
                    stamp(*arena, held.back());
                } else {
                    const std::size_t k = rng() % held.size();
                    std::swap(held[k], held.back());
                    if (!stamp_intact(*arena, held.back())) corrupt.fetch_add(1);
                    claims.drop(held.back().page);
                    if (arena->put(held.back().page)) put_errors.fetch_add(1);
                    held.pop_back();
                }
            }
            for (const Held& h : held) {
                if (!stamp_intact(*arena, h)) corrupt.fetch_add(1);
                claims.drop(h.page);
                if (arena->put(h.page)) put_errors.fetch_add(1);
            }
        });
    }
    for (auto& th : threads) th.join();

    CHECK(claims.doubles() == 0);
    CHECK(corrupt.load() == 0);
    CHECK(put_errors.load() == 0);
    const auto s = arena->stats();
    CHECK(s.used_pages == 0);
    CHECK(frees.load() == allocs.load());
    CHECK(s.alloc_failures == full.load());
    CHECK(s.high_water_pages <= s.limit_pages);
    CHECK(s.high_water_pages > kPagesPerChunk);   // it did grow beyond the first chunk
    CHECK(s.chunks <= 4);
    // Everything is free again: the whole arena is available as one run per chunk.
    std::vector<PageIndex> all(s.capacity_pages);
    CHECK(arena->alloc_run(all.size(), owner, all).value() <= s.chunks);   // one run per chunk at most
    for (const PageIndex p : all) REQUIRE_FALSE(arena->put(p));
}

TEST_CASE("racing puts on shared pages free each page exactly once") {
    auto arena = make_arena(memfd_spec(kChunkSize));
    std::vector<std::atomic<int>> freed(kPagesPerChunk);
    const auto owner = arena->add_owner(&token, [&](PageIndex page, const void*) {
                                 freed[page].fetch_add(1);
                             }).value();
    std::vector<PageIndex> pages;
    for (std::size_t i = 0; i < 256; ++i) {
        const auto page = arena->alloc(owner).value();
        for (int r = 1; r < kThreads; ++r) REQUIRE_FALSE(arena->get(page));   // one reference per thread
        pages.push_back(page);
    }
    std::atomic<int> refused{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            for (const PageIndex p : pages) {
                if (arena->put(p)) refused.fetch_add(1);
                // A get racing the last put either wins (and must be put) or is refused.
                if (!arena->get(p) && arena->put(p)) refused.fetch_add(1);
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(refused.load() == 0);
    for (const PageIndex p : pages) CHECK(freed[p].load() == 1);
    CHECK(arena->stats().used_pages == 0);
}

TEST_CASE("runs allocated by several threads at once are disjoint") {
    auto arena = make_arena(memfd_spec(16 << 20));
    const auto owner = arena->add_owner(&token).value();
    Claims claims(arena->stats().limit_pages);
    std::atomic<std::size_t> corrupt{0}, put_errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t) + 7);
            std::vector<PageIndex> run(700);
            for (int i = 0; i < 300; ++i) {
                const std::size_t n = 1 + rng() % run.size();
                auto runs = arena->alloc_run(n, owner, run);
                if (!runs) continue;   // full for now
                for (std::size_t k = 0; k < n; ++k) {
                    claims.take(run[k]);
                    std::memcpy(arena->address(run[k]), &k, sizeof k);
                }
                for (std::size_t k = 0; k < n; ++k) {
                    std::size_t seen;
                    std::memcpy(&seen, arena->address(run[k]), sizeof seen);
                    if (seen != k) corrupt.fetch_add(1);
                    claims.drop(run[k]);
                    if (arena->put(run[k])) put_errors.fetch_add(1);
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(claims.doubles() == 0);
    CHECK(corrupt.load() == 0);
    CHECK(put_errors.load() == 0);
    const auto s = arena->stats();
    CHECK(s.used_pages == 0);
    CHECK(s.runs_contiguous + s.runs_scattered > 0);
}
