// The runtime over GPU memory (arena cuda:0, the CUDA copy engine): pages go
// to the GPU and come home on CPU faults and on request, through the engine's
// staging buffers (a GPU arena has no CPU mapping). Exits 77 with the reason
// when no GPU is usable here, so a machine without one reports a skip.
#include <catch2/catch.hpp>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

namespace {

constexpr const char* kCudaConf = "arena=cuda:0,arena_size=256M";

}  // namespace

std::optional<std::string> uhmm_test_skip_reason() {
    if (auto why = userfaultfd_unavailable()) return why;
    std::string why;
    auto cfg = RuntimeConfig::parse(kCudaConf, &why);
    if (!cfg) return "bad test configuration: " + why;
    auto rt = Runtime::create(*cfg, &why);
    if (!rt) return "no usable GPU: " + why;
    return std::nullopt;
}

TEST_CASE("GPU arena: 64 MiB to the GPU and home on CPU reads, every byte intact") {
    auto rt = make_runtime(kCudaConf);
    CHECK(rt->describe().find("cuda") != std::string::npos);
    constexpr std::size_t len = 64 * MiB, pages = len / kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);

    const auto r = migrate_ok(*rt, p, len, Target::device);
    CHECK(r.migrated == pages);
    CHECK(r.failed == 0);
    CHECK(r.bytes == len);
    CHECK(count_state(*rt, p, len, PageState::device) == pages);
    CHECK(cpu_mapped_pages(p, len) == 0);
    CHECK(rt->stats().arena.used_pages == pages);

    CHECK(first_mismatch(p, len) == len);
    CHECK(count_state(*rt, p, len, PageState::host) == pages);
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));
    CHECK(rt->stats().pages_to_host_on_fault >= pages);
    CHECK(!rt->release(p, len));
}

TEST_CASE("GPU arena: explicit migration home, writes between trips carried") {
    auto rt = make_runtime(kCudaConf);
    constexpr std::size_t len = 16 * MiB, pages = len / kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    for (std::uint8_t salt = 1; salt <= 3; ++salt) {
        fill_salted(p, len, salt);
        REQUIRE(migrate_ok(*rt, p, len, Target::device).migrated == pages);
        const auto h = migrate_ok(*rt, p, len, Target::host);
        CHECK(h.migrated == pages);
        CHECK(h.bytes == len);
        CHECK(cpu_mapped_pages(p, len) == static_cast<long>(pages));
        CHECK(first_mismatch_salted(p, len, salt) == len);
    }
    // Never-touched memory reads zero after a trip.
    auto z = rt->allocate(len);
    REQUIRE(z.ok());
    auto* q = static_cast<std::byte*>(*z);
    REQUIRE(migrate_ok(*rt, q, len, Target::device).migrated == pages);
    CHECK(first_nonzero(q, len) == len);
}

TEST_CASE("GPU arena: threads write random pages while others migrate; no write lost") {
    auto rt = make_runtime("arena=cuda:0,arena_size=256M,fault_threads=2");
    constexpr std::size_t pages = 2048, len = pages * kPage, words = len / 8;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* w = static_cast<std::uint64_t*>(*a);
    std::vector<std::atomic<std::uint64_t>> last(pages);   // last value written at each page's word 0
    for (std::size_t i = 0; i < words; ++i) w[i] = i;
    std::atomic<bool> stop{false};
    std::atomic<std::size_t> bad{0}, calls_failed{0};
    std::thread mover([&] {
        std::mt19937_64 rng(7);
        while (!stop.load(std::memory_order_relaxed)) {
            const std::size_t first = rng() % pages, n = 1 + rng() % std::min<std::size_t>(256, pages - first);
            auto r = rt->migrate(w + first * (kPage / 8), n * kPage, rng() % 3 ? Target::device : Target::host);
            if (!r.ok() || r->failed) calls_failed.fetch_add(1);
        }
    });
    std::vector<std::thread> writers;
    for (unsigned t = 0; t < 4; ++t) {
        writers.emplace_back([&, t] {
            std::mt19937_64 rng(100 + t);
            for (std::size_t i = 0; i < scaled(4000); ++i) {
                const std::size_t pg = (rng() % (pages / 4)) * 4 + t;   // each thread its own pages
                const std::uint64_t v = (std::uint64_t{t} << 56) | (i + 1);
                reinterpret_cast<std::atomic<std::uint64_t>*>(w + pg * (kPage / 8))->store(v);
                last[pg].store(v, std::memory_order_relaxed);
                if (reinterpret_cast<std::atomic<std::uint64_t>*>(w + pg * (kPage / 8))->load() != v) bad.fetch_add(1);
            }
        });
    }
    for (auto& t : writers) t.join();
    stop.store(true);
    mover.join();
    CHECK(bad.load() == 0);
    CHECK(calls_failed.load() == 0);
    std::size_t wrong = 0;
    for (std::size_t pg = 0; pg < pages; ++pg) {
        const std::uint64_t want = last[pg].load() ? last[pg].load() : pg * (kPage / 8);
        wrong += w[pg * (kPage / 8)] != want;
        for (std::size_t k = 1; k < kPage / 8; ++k) wrong += w[pg * (kPage / 8) + k] != pg * (kPage / 8) + k;
    }
    CHECK(wrong == 0);
}

TEST_CASE("GPU arena: destroying the runtime brings GPU-resident pages home first") {
    constexpr std::size_t len = 8 * MiB, pages = len / kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    {
        auto rt = make_runtime(kCudaConf);
        REQUIRE(!rt->manage(m.data(), len));
        REQUIRE(migrate_ok(*rt, m.data(), len, Target::device).migrated == pages);
        CHECK(cpu_mapped_pages(m.data(), len) == 0);
    }
    CHECK(cpu_mapped_pages(m.data(), len) == static_cast<long>(pages));
    CHECK(first_mismatch(m.data(), len) == len);
}
