// The edges of the runtime's life: an arena that fills up in the middle of a
// migration (partial failure, nothing lost), and a runtime destroyed with
// pages on the device (every byte comes home, the memory stays usable),
// also while application threads read it.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

bool is_arena_full(const std::error_code& ec) {
    return ec == devmem::Errc::arena_full || ec == std::errc::not_enough_memory;
}

}  // namespace

TEST_CASE("arena exhaustion mid-migration: partial result, nothing lost", "[concurrency]") {
    auto rt = make_runtime("arena=memfd,arena_size=4M");
    constexpr std::size_t len = 16 * MiB, pages = len / kPage, arena_pages = 4 * MiB / kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    REQUIRE(!rt->manage(m.data(), len));

    const auto r = migrate_ok(*rt, m.data(), len, Target::device);
    INFO("requested " << r.requested << " migrated " << r.migrated << " already_there " << r.already_there
                      << " failed " << r.failed << " error " << r.error.message());
    CHECK(r.requested == pages);
    CHECK(r.already_there == 0);
    CHECK(r.migrated + r.failed == pages);
    CHECK(r.failed > 0);
    CHECK(r.migrated > 0);
    CHECK(r.migrated <= arena_pages);
    CHECK(r.bytes == r.migrated * kPage);
    CHECK(is_arena_full(r.error));

    const auto st = states(*rt, m.data(), len);
    CHECK(count_state(st, PageState::device) == r.migrated);
    CHECK(count_state(st, PageState::host) == r.failed);
    CHECK(count_state(st, PageState::migrating) == 0);
    CHECK(cpu_mapped_pages(m.data(), len) == static_cast<long>(r.failed));
    const auto s = rt->stats();
    CHECK(s.device_pages == r.migrated);
    CHECK(s.migrate_failed_pages >= r.failed);
    CHECK(s.arena.used_pages == r.migrated);

    // Pages that failed are home and mapped: reading them costs no fault.
    std::vector<std::size_t> home;
    for (std::size_t i = 0; i < pages; ++i)
        if (st[i] == PageState::host) home.push_back(i);
    const auto faults = rt->stats().faults;
    for (std::size_t i : home) {
        INFO("failed page " << i);
        REQUIRE(first_mismatch(m.page(i), kPage) == kPage);
    }
    CHECK(rt->stats().faults == faults);

    // Every byte.
    CHECK(first_mismatch(m.data(), len) == len);
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));

    // The arena is usable again once pages came home: a quarter fits.
    const auto r2 = migrate_ok(*rt, m.page(pages - arena_pages), arena_pages * kPage, Target::device);
    INFO("second: migrated " << r2.migrated << " failed " << r2.failed << " error " << r2.error.message());
    CHECK(r2.failed == 0);
    CHECK(r2.migrated == arena_pages);
    CHECK(first_mismatch(m.data(), len) == len);
}

TEST_CASE("arena exhaustion with two threads migrating at once", "[concurrency]") {
    Watchdog wd(120, "arena exhaustion with two threads");
    auto rt = make_runtime("arena=memfd,arena_size=4M");
    constexpr std::size_t len = 8 * MiB, pages = len / kPage, arena_pages = 4 * MiB / kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    REQUIRE(!rt->manage(m.data(), len));
    MigrateResult res[2];
    bool ok[2] = {false, false};
    std::thread t0([&] {
        auto r = rt->migrate(m.data(), len / 2, Target::device);
        ok[0] = r.ok();
        if (r.ok()) res[0] = *r;
    });
    std::thread t1([&] {
        auto r = rt->migrate(m.data() + len / 2, len / 2, Target::device);
        ok[1] = r.ok();
        if (r.ok()) res[1] = *r;
    });
    t0.join();
    t1.join();
    REQUIRE(ok[0]);
    REQUIRE(ok[1]);
    std::size_t migrated = 0, failed = 0;
    for (const auto& r : res) {
        INFO("migrated " << r.migrated << " failed " << r.failed << " error " << r.error.message());
        CHECK(r.requested == pages / 2);
        CHECK(r.migrated + r.failed == pages / 2);
        if (r.failed) CHECK(is_arena_full(r.error));
        migrated += r.migrated;
        failed += r.failed;
    }
    CHECK(migrated <= arena_pages);
    CHECK(failed >= pages - arena_pages);
    CHECK(count_state(*rt, m.data(), len, PageState::device) == migrated);
    CHECK(rt->stats().device_pages == migrated);
    CHECK(first_mismatch(m.data(), len) == len);
}

TEST_CASE("a runtime destroyed with pages on the device leaves every byte in place", "[concurrency]") {
    constexpr std::size_t len = 8 * MiB, pages = len / kPage, filled = 7 * MiB;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), filled);   // the last MiB is never touched
    Mapping other(64 * kPage);
    REQUIRE(other);
    fill_pattern(other.data(), other.size());
    {
        auto rt = make_runtime();
        REQUIRE(!rt->manage(m.data(), len));
        REQUIRE(!rt->manage(other.data(), other.size()));
        const auto r = migrate_ok(*rt, m.data(), len, Target::device);
        REQUIRE(r.failed == 0);
        REQUIRE(migrate_ok(*rt, other.data(), other.size(), Target::device).migrated == 64);
        // Some came home by a touch, some by request: a mix of states.
        CHECK(first_mismatch(m.page(10), 5 * kPage) == 5 * kPage);
        REQUIRE(migrate_ok(*rt, m.page(100), 50 * kPage, Target::host).failed == 0);
        CHECK(rt->stats().device_pages >= (filled / kPage) - 55);
        (void)pages;
    }   // ~Runtime
    CHECK(first_mismatch(m.data(), filled) == filled);
    CHECK(first_nonzero(m.data() + filled, len - filled) == len - filled);
    CHECK(first_mismatch(other.data(), other.size()) == other.size());
    // Ordinary memory now: writes stick, DONTNEED zeroes, nobody is asked.
    fill_salted(m.data(), len, 3);
    CHECK(first_mismatch_salted(m.data(), len, 3) == len);
    REQUIRE(::madvise(m.data(), len / 2, MADV_DONTNEED) == 0);
    CHECK(first_nonzero(m.data(), len / 2) == len / 2);
    CHECK(first_mismatch_salted(m.data() + len / 2, len / 2, 3) == len / 2);
    // And a new runtime can manage it again.
    auto rt2 = make_runtime();
    REQUIRE(!rt2->manage(m.data(), len));
    REQUIRE(migrate_ok(*rt2, m.data() + len / 2, len / 2, Target::device).migrated == pages / 2);
    CHECK(first_mismatch_salted(m.data() + len / 2, len / 2, 3) == len / 2);
}

TEST_CASE("a runtime destroyed while threads read its device pages", "[concurrency]") {
    constexpr std::size_t len = 8 * MiB, pages = len / kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    auto rt = make_runtime("arena=memfd,arena_size=64M,fault_threads=2");
    REQUIRE(!rt->manage(m.data(), len));
    REQUIRE(migrate_ok(*rt, m.data(), len, Target::device).migrated == pages);

    std::atomic<bool> stop{false};
    std::atomic<std::size_t> bad{0}, done{0}, touches{0};
    constexpr std::size_t kReaders = 4;
    std::vector<std::thread> readers;
    for (std::size_t t = 0; t < kReaders; ++t) {
        readers.emplace_back([&, t] {
            std::size_t pg = t * 97;
            while (!stop.load(std::memory_order_relaxed)) {
                pg = (pg * 1103515245u + 12345u + t) % pages;
                const std::byte* b = m.page(pg) + (pg % 64) * 8;
                std::uint64_t v = std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(const_cast<std::byte*>(b)))
                                      .load(std::memory_order_relaxed);
                std::byte expect[8];
                fill_pattern_at(expect, addr_of(b), 8);
                if (std::memcmp(&v, expect, 8) != 0) bad.fetch_add(1);
                touches.fetch_add(1, std::memory_order_relaxed);
            }
            done.fetch_add(1);
        });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    rt.reset();   // brings every device page home while the readers fault on them
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stop.store(true);
    if (!eventually([&] { return done.load() == kReaders; }, 30000)) {
        std::fprintf(stderr, "FAIL: readers still blocked 30 s after ~Runtime (a fault nobody serves)\n");
        std::fflush(nullptr);
        std::_Exit(1);
    }
    for (auto& t : readers) t.join();
    INFO("touches " << touches.load());
    CHECK(bad.load() == 0);
    CHECK(first_mismatch(m.data(), len) == len);
}
