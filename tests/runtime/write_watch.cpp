// Runtime::watch_writes / take_writes: the first write to a watched host page
// is noted (one fault) and goes through; the note survives until taken; a
// page that moves loses watch and note; bad spans are refused. Concurrent
// writers never lose a byte while pages are watched, taken and migrated.
#include <catch2/catch.hpp>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

std::vector<std::uint8_t> take(Runtime& rt, void* p, std::size_t len) {
    std::vector<std::uint8_t> bits(len / kPage, 0xff);
    REQUIRE(!rt.take_writes(p, len, bits));
    return bits;
}

std::size_t count_set(const std::vector<std::uint8_t>& bits) {
    std::size_t n = 0;
    for (auto b : bits) n += b != 0;
    return n;
}

}  // namespace

TEST_CASE("watch_writes notes the first write to each watched host page, once") {
    // One page per first touch, so that untouched pages stay NONE.
    auto rt = make_runtime("arena=memfd,arena_size=64M,fault_around=4K");
    constexpr std::size_t pages = 64, len = pages * kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    // Only host pages are watched: the never-touched half is not.
    fill_pattern(p, len / 2);
    auto watched = rt->watch_writes(p, len);
    REQUIRE(watched.ok());
    CHECK(*watched == pages / 2);
    // Watching again adds nothing.
    CHECK(*rt->watch_writes(p, len) == 0);

    const auto before = rt->stats().watched_writes;
    // Write pages 3, 5..9 (twice each: only the first faults); read page 1.
    for (int round = 0; round < 2; ++round)
        for (std::size_t i : {3u, 5u, 6u, 7u, 8u, 9u}) p[i * kPage + 17] = std::byte{0x5a};
    volatile std::byte sink = p[1 * kPage];
    (void)sink;
    CHECK(rt->stats().watched_writes - before == 6);

    auto bits = take(*rt, p, len);
    CHECK(count_set(bits) == 6);
    for (std::size_t i : {3u, 5u, 6u, 7u, 8u, 9u}) CHECK(bits[i] == 1);
    CHECK(bits[1] == 0);
    // Taken: the notes are cleared, and the watch on those pages is over.
    CHECK(count_set(take(*rt, p, len)) == 0);
    p[3 * kPage] = std::byte{1};
    CHECK(rt->stats().watched_writes - before == 6);
    CHECK(count_set(take(*rt, p, len)) == 0);
    // The data are what was written.
    CHECK(p[3 * kPage + 17] == std::byte{0x5a});
    CHECK(first_mismatch(p + 10 * kPage, len / 2 - 10 * kPage) == len / 2 - 10 * kPage);
    REQUIRE(!rt->release(p, len));
}

TEST_CASE("a watched page that moves loses its watch and its note") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 16, len = pages * kPage;
    auto* p = allocate_filled(*rt, len);
    REQUIRE(*rt->watch_writes(p, len) == pages);
    p[0] = std::byte{0x11};            // page 0: written, noted
    migrate_ok(*rt, p, 2 * kPage, Target::device);   // pages 0 and 1 go (note and watch dropped)
    CHECK(count_state(*rt, p, 2 * kPage, PageState::device) == 2);
    const auto before = rt->stats().watched_writes;
    // Writing them faults them home, as a move, not as a watched write.
    fill_pattern(p, 2 * kPage);
    CHECK(rt->stats().watched_writes == before);
    auto bits = take(*rt, p, len);
    CHECK(count_set(bits) == 0);
    // The others are still watched.
    p[5 * kPage] = std::byte{7};
    CHECK(rt->stats().watched_writes == before + 1);
    CHECK(take(*rt, p, len)[5] == 1);
    // Dropped by the application: no watch, no note.
    REQUIRE(*rt->watch_writes(p, len) > 0);
    REQUIRE(::madvise(p + 8 * kPage, 8 * kPage, MADV_DONTNEED) == 0);
    CHECK(eventually([&] { return count_state(*rt, p + 8 * kPage, 8 * kPage, PageState::none) == 8; }));
    p[9 * kPage] = std::byte{1};
    CHECK(take(*rt, p, len)[9] == 0);
    CHECK(first_nonzero(p + 10 * kPage, 6 * kPage) == 6 * kPage);
    REQUIRE(!rt->release(p, len));
}

TEST_CASE("watch_writes and take_writes refuse unmanaged pages and short spans") {
    auto rt = make_runtime();
    auto a = rt->allocate(4 * kPage);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    std::vector<std::byte> plain(8 * kPage);
    auto w = rt->watch_writes(plain.data(), kPage);
    REQUIRE(!w.ok());
    CHECK(w.error() == std::errc::bad_address);
    std::vector<std::uint8_t> bits(4);
    CHECK(rt->take_writes(plain.data(), kPage, bits) == std::errc::bad_address);
    CHECK(rt->take_writes(p, 4 * kPage, std::span(bits).first(3)) == std::errc::invalid_argument);
    // A span running past the range: EFAULT.
    std::vector<std::uint8_t> five(5);
    CHECK(rt->take_writes(p, 5 * kPage, five) == std::errc::bad_address);
    REQUIRE(!rt->release(p, 4 * kPage));
}

TEST_CASE("writers lose nothing while their pages are watched, taken and migrated") {
    auto rt = make_runtime();
    constexpr std::size_t threads = 2, pages_each = 256, len = threads * pages_each * kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    std::fill(p, p + len, std::byte{0});
    std::atomic<bool> stop{false};
    // Each writer owns its half and counts into every page's first word.
    std::vector<std::thread> writers;
    std::vector<std::uint64_t> rounds(threads);
    for (std::size_t t = 0; t < threads; ++t)
        writers.emplace_back([&, t] {
            auto* base = p + t * pages_each * kPage;
            std::uint64_t n = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                ++n;
                for (std::size_t i = 0; i < pages_each; ++i)
                    *reinterpret_cast<volatile std::uint64_t*>(base + i * kPage) = n;
            }
            rounds[t] = n;
        });
    std::size_t noted = 0;
    std::vector<std::uint8_t> bits(len / kPage);
    // Until both writers are seen through the watch many times (they write
    // until told to stop, so they are running all along).
    for (int i = 0; i < 200 || noted < 100; ++i) {
        (void)rt->watch_writes(p, len);
        if (i % 4 == 3) (void)rt->migrate(p + (i % 8) * 32 * kPage, 32 * kPage, Target::device);
        REQUIRE(!rt->take_writes(p, len, bits));
        noted += count_set(bits);
    }
    stop = true;
    for (auto& w : writers) w.join();
    for (std::size_t t = 0; t < threads; ++t)
        for (std::size_t i = 0; i < pages_each; ++i)
            REQUIRE(*reinterpret_cast<std::uint64_t*>(p + (t * pages_each + i) * kPage) == rounds[t]);
    INFO("writes noted: " << noted);
    CHECK(noted > 0);
    REQUIRE(!rt->release(p, len));
}
