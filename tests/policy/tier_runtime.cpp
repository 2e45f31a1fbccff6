// policy=tier in a real runtime: host-resident managed memory is brought
// within tier_hot and kept there, the coldest pages going to the device;
// touches bring pages home and the data never changes.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

TEST_CASE("policy=tier brings host-resident managed memory within tier_hot, data intact") {
    auto rt = make_runtime("arena=memfd,arena_size=64M,policy=tier,tier_hot=1M");
    constexpr std::size_t hot_pages = (1u << 20) / kPage;
    constexpr std::size_t len = 16u << 20, pages = len / kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);   // every page touched: 4096 host pages, 16 times the budget
    // Within budget once a round has finished moving (pages in flight are
    // neither host nor device).
    auto settled = [&] {
        const auto s = states(*rt, p, len);
        return count_state(s, PageState::host) <= hot_pages && count_state(s, PageState::migrating) == 0 &&
               rt->stats().policy_rounds > 0;
    };
    CHECK(eventually(settled));
    CHECK(count_state(*rt, p, len, PageState::device) >= pages - hot_pages);
    const auto st = rt->stats();
    CHECK(st.policy_rounds > 0);
    CHECK(st.policy_migrations > 0);
    // Reading it all brings every page home through faults...
    CHECK(first_mismatch(p, len) == len);
    CHECK(rt->stats().device_faults > 0);
    // ...and the policy puts the memory back within the budget.
    CHECK(eventually(settled));
    CHECK(first_mismatch(p, len) == len);
    REQUIRE(!rt->release(p, len));
}

TEST_CASE("policy=tier keeps a page that keeps coming back on the host more than one touched once") {
    auto rt = make_runtime("arena=memfd,arena_size=64M,policy=tier,tier_hot=512K");
    constexpr std::size_t len = 8u << 20;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    // A hot set of 16 pages read every few milliseconds while the rest is
    // written once: the hot pages refault soon after each demotion, which
    // proves them hot (the refault distance); the cold ones never come back.
    constexpr std::size_t hot = 16;
    const auto faults_before = rt->stats().device_faults;
    for (int i = 0; i < 200; ++i) {
        for (std::size_t h = 0; h < hot; ++h) REQUIRE(first_mismatch(p + h * kPage, kPage) == kPage);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const auto hot_states = states(*rt, p, hot * kPage);
    INFO("device faults during the hot loop: " << rt->stats().device_faults - faults_before);
    CHECK(count_state(hot_states, PageState::host) >= hot / 2);
    CHECK(first_mismatch(p, len) == len);
    REQUIRE(!rt->release(p, len));
}

TEST_CASE("policy=tier keeps pages that keep being written on the host (watched writes)") {
    // Rounds are run by hand after each step, so the trace is the same
    // whatever the machine's speed (the policy's own thread runs some too).
    auto rt = make_runtime("arena=memfd,arena_size=64M,policy=tier,tier_hot=1M,fault_around=4K");
    constexpr std::size_t budget = (1u << 20) / kPage;   // 256 pages
    constexpr std::size_t hot = 64, step = 64, steps = 96;
    constexpr std::size_t cold_len = step * steps * kPage;   // 24 times the budget, each page read once
    auto h = rt->allocate(hot * kPage);
    auto c = rt->allocate(cold_len);
    REQUIRE(h.ok());
    REQUIRE(c.ok());
    auto* hp = static_cast<std::byte*>(*h);
    auto* cp = static_cast<std::byte*>(*c);
    std::size_t hot_on_device = 0;
    for (std::size_t i = 0; i < steps; ++i) {
        // Only writes show these pages are used (a write to a host page
        // faults only when the page is watched); the cold pages are read
        // once each, the newest first touches every round.
        hot_on_device += count_state(*rt, hp, hot * kPage, PageState::device);
        fill_salted(hp, hot * kPage, static_cast<std::uint8_t>(i));
        volatile std::uint64_t sum = 0;
        for (std::size_t k = 0; k < step; ++k) sum = sum + static_cast<std::uint64_t>(cp[(i * step + k) * kPage]);
        (void)rt->policy_round();
    }
    const auto st = rt->stats();
    INFO("hot pages found on the device " << hot_on_device << ", watched writes " << st.watched_writes
                                          << ", pages to device " << st.pages_to_device);
    // Without the writes, the hot pages are the oldest unproven pages once
    // the budget is reached: every one of them would be demoted first.
    CHECK(st.pages_to_device >= (steps * step + hot) - 2 * budget);
    CHECK(st.watched_writes > 0);
    CHECK(hot_on_device == 0);
    CHECK(first_mismatch_salted(hp, hot * kPage, static_cast<std::uint8_t>(steps - 1)) == hot * kPage);
    CHECK(first_nonzero(cp, cold_len) == cold_len);
    REQUIRE(!rt->release(hp, hot * kPage));
    REQUIRE(!rt->release(cp, cold_len));
}

TEST_CASE("policy=tier under two threads sweeping, rewriting and reading at random: every page keeps its data",
          "[concurrency]") {
    // Sort's pattern at a small scale: passes over the whole buffer that
    // rewrite it, and random reads in between, with a budget of an eighth,
    // so that chunks keep leaving and coming back while both threads touch
    // them. Each page carries (its index, its version) in every word; each
    // thread owns half the pages and is the only one to rewrite them.
    auto rt = make_runtime("arena=memfd,arena_size=64M,policy=tier,tier_hot=2M");
    constexpr std::size_t pages = 4096, words = kPage / 8;
    auto a = rt->allocate(pages * kPage);
    REQUIRE(a.ok());
    auto* mem = static_cast<std::uint64_t*>(*a);
    auto value = [](std::size_t page, std::uint64_t version) { return (std::uint64_t{page} << 32) | version; };
    std::vector<std::uint64_t> version(pages, 1);
    for (std::size_t p = 0; p < pages; ++p)
        for (std::size_t w = 0; w < words; ++w) mem[p * words + w] = value(p, 1);
    std::atomic<std::size_t> bad{0}, first_bad{~std::size_t{0}};
    std::atomic<bool> stop{false};
    auto check = [&](std::size_t p, std::uint64_t expect) {
        for (std::size_t w = 0; w < words; w += 97)
            if (mem[p * words + w] != expect) {
                std::size_t none = ~std::size_t{0};
                first_bad.compare_exchange_strong(none, p);
                ++bad;
                return;
            }
    };
    auto worker = [&](std::size_t half) {
        std::mt19937_64 rng(half + 7);
        const std::size_t lo = half * pages / 2, hi = lo + pages / 2;
        while (!stop.load()) {
            // A sweep over its own half: check, then rewrite.
            for (std::size_t p = lo; p < hi; ++p) {
                check(p, value(p, version[p]));
                ++version[p];
                for (std::size_t w = 0; w < words; ++w) mem[p * words + w] = value(p, version[p]);
            }
            // Random reads of its own pages.
            for (int k = 0; k < 2000; ++k) {
                const std::size_t p = lo + rng() % (hi - lo);
                check(p, value(p, version[p]));
            }
        }
    };
    std::thread t0(worker, 0), t1(worker, 1);
    std::this_thread::sleep_for(std::chrono::seconds(4));
    stop = true;
    t0.join();
    t1.join();
    const auto st = rt->stats();
    INFO("first bad page " << first_bad.load() << ", device faults " << st.device_faults << ", pages to device "
                           << st.pages_to_device);
    CHECK(st.device_faults > 0);
    CHECK(bad.load() == 0);
    for (std::size_t p = 0; p < pages; ++p) check(p, value(p, version[p]));
    CHECK(bad.load() == 0);
    REQUIRE(!rt->release(mem, pages * kPage));
}
