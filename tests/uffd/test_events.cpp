// Non-cooperative events reach the handler as typed events with the right
// addresses: madvise(DONTNEED) → Remove, munmap → Unmap, mremap → Remap,
// fork → Fork (with a usable child userfaultfd).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include "fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

std::uintptr_t addr(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

}  // namespace

TEST_CASE("madvise DONTNEED on a registered range is seen as Remove with its bounds") {
    Mapping m(8 * kPage);
    Served s(open_or_die());
    REQUIRE(s.start());
    REQUIRE(s.u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    CHECK(first_mismatch(m.page(2), kPage) == kPage);   // populate page 2
    REQUIRE(::madvise(m.page(2), 3 * kPage, MADV_DONTNEED) == 0);   // returns once the event was read
    REQUIRE(eventually([&] { std::lock_guard l(s.h.lock); return s.h.removes.size() == 1; }));
    std::lock_guard l(s.h.lock);
    REQUIRE(s.h.removes.size() == 1);
    CHECK(s.h.removes[0].start == addr(m.page(2)));
    CHECK(s.h.removes[0].end == addr(m.page(5)));
}

TEST_CASE("a dropped page faults again and is served again") {
    Mapping m(2 * kPage);
    Served s(open_or_die());
    REQUIRE(s.start());
    REQUIRE(s.u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    m.page(0)[0] = std::byte{9};          // served with the pattern, then overwritten
    REQUIRE(::madvise(m.page(0), kPage, MADV_DONTNEED) == 0);
    CHECK(first_mismatch(m.page(0), kPage) == kPage);   // pattern again, not the 9
    CHECK(s.h.missing_faults.load() == 2);
}

TEST_CASE("munmap of a registered range is seen as Unmap with its bounds") {
    Mapping m(8 * kPage);
    Served s(open_or_die());
    REQUIRE(s.start());
    REQUIRE(s.u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    REQUIRE(::munmap(m.page(6), 2 * kPage) == 0);
    REQUIRE(eventually([&] { std::lock_guard l(s.h.lock); return s.h.unmaps.size() == 1; }));
    {
        std::lock_guard l(s.h.lock);
        REQUIRE(s.h.unmaps.size() == 1);
        CHECK(s.h.unmaps[0].start == addr(m.page(6)));
        CHECK(s.h.unmaps[0].end == addr(m.page(8)));
    }
    REQUIRE(::munmap(m.data(), 6 * kPage) == 0);
    m.forget();
    CHECK(eventually([&] { std::lock_guard l(s.h.lock); return s.h.unmaps.size() == 2; }));
}

TEST_CASE("mremap moving a registered range is seen as Remap from, to, len") {
    Mapping m(4 * kPage);
    Mapping target(8 * kPage);   // a place to move to
    Served s(open_or_die());
    REQUIRE(s.start());
    REQUIRE(s.u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    CHECK(first_mismatch(m.page(1), kPage) == kPage);
    const auto from = addr(m.data());
    void* to = ::mremap(m.data(), m.size(), m.size(), MREMAP_MAYMOVE | MREMAP_FIXED, target.data());
    REQUIRE(to == target.data());
    m.forget();
    REQUIRE(eventually([&] { std::lock_guard l(s.h.lock); return s.h.remaps.size() == 1; }));
    {
        std::lock_guard l(s.h.lock);
        CHECK(s.h.remaps[0].from == from);
        CHECK(s.h.remaps[0].to == addr(target.data()));
        CHECK(s.h.remaps[0].len == 4 * kPage);
    }
    // The moved page kept its data (the pattern of its old address).
    const auto* moved = static_cast<const std::byte*>(to) + kPage;
    const auto old = from + kPage;
    for (std::size_t i = 0; i < kPage; ++i) REQUIRE(moved[i] == std::byte{pattern_byte(old + i)});
    // The registration moved too: a missing page at the new place faults to us.
    const auto before = s.h.missing_faults.load();
    volatile std::byte b = static_cast<std::byte*>(to)[3 * kPage];
    (void)b;
    CHECK(s.h.missing_faults.load() == before + 1);
}

TEST_CASE("fork is seen as Fork carrying the child's userfaultfd") {
    Mapping m(2 * kPage);
    Served s(open_or_die());
    REQUIRE(s.start());
    if (!s.u.has(uffd::feature::event_fork)) {
        WARN("fork events need CAP_SYS_PTRACE: not covered here");
        return;
    }
    REQUIRE(s.u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    REQUIRE(child > 0);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(eventually([&] { return s.h.forks.load() == 1; }));
    CHECK(s.h.valid_fork_fds.load() == 1);
}

TEST_CASE("a child whose fork fd was closed sees its registered memory as ordinary memory") {
    Mapping m(2 * kPage);
    Served s(open_or_die());
    REQUIRE(s.start());
    if (!s.u.has(uffd::feature::event_fork)) {
        WARN("fork events need CAP_SYS_PTRACE: not covered here");
        return;
    }
    REQUIRE(s.u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    const pid_t child = ::fork();
    if (child == 0) {
        // Page 1 was never touched: without a monitor for the child's fd this
        // would hang forever; with the fd closed the kernel fills a zero page.
        volatile std::byte b = m.page(1)[0];
        ::_exit(b == std::byte{0} ? 0 : 3);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}
