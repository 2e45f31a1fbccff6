// Many application threads faulting on one range at once, served by one or
// two reader threads: every byte checked, no write lost. And a clean shutdown
// while threads are parked in faults.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <future>
#include <random>
#include <thread>

#include "fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

constexpr std::size_t kPages = 4096;   // 16 MiB: big enough to race, small enough for TSan
constexpr unsigned kThreads = 8;

uffd::Uffd open_uffd() {
    auto u = uffd::Uffd::open();
    REQUIRE(u.ok());
    return std::move(*u);
}

std::uint64_t& word(const Mapping& m, std::size_t page, unsigned t) {
    return *reinterpret_cast<std::uint64_t*>(m.page(page) + 64 + 8 * t);
}

std::uint64_t stamp(std::size_t page, unsigned t) { return (std::uint64_t{page} << 8) | (t + 1); }

}  // namespace

TEST_CASE("threads faulting on the same pages all see the served data and keep their writes") {
    const unsigned readers = GENERATE(1u, 2u);
    CAPTURE(readers);
    Mapping m(kPages * kPage);
    auto u = open_uffd();
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    PatternHandler h(u);
    uffd::Monitor mon(u, h, {.threads = readers});
    REQUIRE(!mon.start());

    std::atomic<std::size_t> bad{0};
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            std::vector<std::size_t> order(kPages);
            for (std::size_t i = 0; i < kPages; ++i) order[i] = i;
            std::shuffle(order.begin(), order.end(), std::mt19937(t));
            for (auto p : order) {
                // Read a byte outside the stamp area (others write there).
                const auto off = (p * 37 + t) % 64;
                const auto a = reinterpret_cast<std::uintptr_t>(m.page(p) + off);
                if (*reinterpret_cast<const volatile std::uint8_t*>(a) != pattern_byte(a)) bad.fetch_add(1);
                // Each thread stamps its own word on the pages of its stripe.
                if (p % kThreads == t) word(m, p, t) = stamp(p, t);
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(bad.load() == 0);
    CHECK(h.failures.load() == 0);
    // Every page faulted at least once and at most once per thread.
    CHECK(h.missing_faults.load() >= kPages);
    CHECK(h.missing_faults.load() <= kPages * kThreads);

    // Every byte: the stamp where its owner wrote, the pattern elsewhere.
    std::size_t wrong = 0;
    for (std::size_t p = 0; p < kPages; ++p) {
        const unsigned owner = p % kThreads;
        const auto* bytes = m.page(p);
        const auto base = reinterpret_cast<std::uintptr_t>(bytes);
        for (std::size_t i = 0; i < kPage; ++i) {
            if (i >= 64 + 8 * owner && i < 72 + 8 * owner) continue;
            if (bytes[i] != std::byte{pattern_byte(base + i)}) ++wrong;
        }
        if (word(m, p, owner) != stamp(p, owner)) ++wrong;
    }
    CHECK(wrong == 0);
}

TEST_CASE("threads writing write-protected pages at once each get their write through") {
    Mapping m(1024 * kPage);
    fill_pattern(m.data(), reinterpret_cast<std::uintptr_t>(m.data()), m.size());
    auto u = open_uffd();
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing | uffd::Mode::wp).ok());
    REQUIRE(u.writeprotect(m.data(), m.size(), true).ok());
    PatternHandler h(u);
    uffd::Monitor mon(u, h, {.threads = 2});
    REQUIRE(!mon.start());

    std::vector<std::thread> threads;
    for (unsigned t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (std::size_t p = 0; p < 1024; ++p) word(m, p, t) = stamp(p, t);
        });
    }
    for (auto& th : threads) th.join();
    std::size_t lost = 0;
    for (std::size_t p = 0; p < 1024; ++p)
        for (unsigned t = 0; t < kThreads; ++t) lost += word(m, p, t) != stamp(p, t);
    CHECK(lost == 0);
    CHECK(h.wp_faults.load() >= 1024);
    CHECK(h.failures.load() == 0);
}

namespace {

// Reads faults and never resolves them: the faulting threads stay parked.
class ParkingHandler : public uffd::Handler {
public:
    uffd::FaultDisposition on_fault(const uffd::PageFault&) noexcept override {
        seen.fetch_add(1);
        return uffd::FaultDisposition::resolved;
    }
    std::atomic<unsigned> seen{0};
};

}  // namespace

TEST_CASE("stopping the monitor wakes every thread parked in a fault") {
    Mapping m(kThreads * kPage);
    auto u = open_uffd();
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    ParkingHandler h;
    uffd::Monitor mon(u, h, {.threads = 2});
    REQUIRE(!mon.start());

    std::vector<std::future<int>> parked;
    for (unsigned t = 0; t < kThreads; ++t)
        parked.push_back(std::async(std::launch::async, [&, t] {
            return static_cast<int>(*reinterpret_cast<volatile std::uint8_t*>(m.page(t) + 1));
        }));
    for (int i = 0; i < 10000 && h.seen.load() < kThreads; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(h.seen.load() == kThreads);
    for (auto& f : parked) REQUIRE(f.wait_for(std::chrono::milliseconds(20)) == std::future_status::timeout);

    mon.stop();
    CHECK(!mon.running());
    for (auto& f : parked) {
        REQUIRE(f.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        CHECK(f.get() == 0);   // no longer registered: ordinary zero-filled memory
    }
    mon.stop();   // idempotent
}

TEST_CASE("a monitor can be stopped and started again and still serves faults") {
    Mapping m(4 * kPage);
    auto u = open_uffd();
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    PatternHandler h(u);
    uffd::Monitor mon(u, h, {.threads = 2});
    REQUIRE(!mon.start());
    CHECK(first_mismatch(m.page(0), kPage) == kPage);
    mon.stop(false);   // keep the registration
    REQUIRE(!mon.start());
    CHECK(first_mismatch(m.page(1), kPage) == kPage);
    CHECK(h.missing_faults.load() == 2);
}
