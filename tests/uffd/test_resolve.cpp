// Faults resolved through the monitor: missing pages with data, zero pages,
// write-protect faults, and the resolve ioctls' outcomes as values.
#include <catch2/catch.hpp>

#include <sys/syscall.h>
#include <sys/wait.h>

#include "fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

uffd::Uffd open_uffd() {
    auto u = uffd::Uffd::open();
    REQUIRE(u.ok());
    return std::move(*u);
}

// A userfaultfd without non-cooperative events, for tests that have no
// monitor: with UNMAP/REMOVE/FORK negotiated, munmap, madvise and fork wait
// until someone reads their event, and nobody would.
uffd::Uffd open_uffd_without_events() {
    uffd::OpenOptions o;
    o.wanted &= ~(uffd::feature::event_unmap | uffd::feature::event_remove | uffd::feature::event_remap |
                  uffd::feature::event_fork);
    auto u = uffd::Uffd::open(o);
    REQUIRE(u.ok());
    return std::move(*u);
}

}  // namespace

TEST_CASE("the probe reports the features that uhmm relies on") {
    const auto& p = uffd::probe();
    REQUIRE(p.available);
    CHECK(p.path != uffd::OpenPath::none);
    // Kernel >= 5.19 is the documented floor; these are what the runtime needs.
    CHECK((p.features & uffd::feature::pagefault_flag_wp) != 0);
    CHECK((p.features & uffd::feature::event_remove) != 0);
    CHECK((p.features & uffd::feature::event_unmap) != 0);
    CHECK((p.features & uffd::feature::thread_id) != 0);
    CHECK(uffd::feature_names(uffd::feature::event_fork | uffd::feature::move) == "event_fork, move");
    CHECK(uffd::feature_names(0) == "none");
}

TEST_CASE("a missing fault is resolved with the handler's data") {
    auto u = open_uffd();
    Mapping m(16 * kPage);
    REQUIRE(m.data());
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    PatternHandler h(u);
    uffd::Monitor mon(u, h);
    REQUIRE(!mon.start());

    for (std::size_t i = 0; i < 16; i += 3) CHECK(first_mismatch(m.page(i), kPage) == kPage);
    CHECK(h.missing_faults.load() == 6);   // pages 0,3,6,9,12,15
    CHECK(h.failures.load() == 0);
    CHECK(mon.stats().faults == 6);
    // Resolved pages stay resolved: touching them again does not fault.
    CHECK(first_mismatch(m.page(3), kPage) == kPage);
    CHECK(mon.stats().faults == 6);
}

TEST_CASE("a read fault resolved with a zero page reads zeros and a later write sticks") {
    auto u = open_uffd();
    Mapping m(4 * kPage);
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    PatternHandler h(u, PatternHandler::Fill::zero);
    uffd::Monitor mon(u, h);
    REQUIRE(!mon.start());

    const volatile std::byte* p = m.page(1);
    for (std::size_t i = 0; i < kPage; ++i) REQUIRE(p[i] == std::byte{0});
    CHECK(h.missing_faults.load() == 1);
    // Writing to the zero page is the kernel's copy-on-write, not a new fault.
    m.page(1)[5] = std::byte{42};
    CHECK(m.page(1)[5] == std::byte{42});
    CHECK(h.missing_faults.load() == 1);
}

TEST_CASE("a write to a write-protected page waits for the handler and then lands") {
    auto u = open_uffd();
    REQUIRE(u.has(uffd::feature::pagefault_flag_wp));
    Mapping m(8 * kPage);
    fill_pattern(m.data(), reinterpret_cast<std::uintptr_t>(m.data()), m.size());
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing | uffd::Mode::wp).ok());
    REQUIRE(u.writeprotect(m.data(), m.size(), true).ok());
    PatternHandler h(u);
    uffd::Monitor mon(u, h);
    REQUIRE(!mon.start());

    // Reads of protected pages go on without a fault.
    CHECK(first_mismatch(m.page(2), kPage) == kPage);
    CHECK(h.wp_faults.load() == 0);
    m.page(2)[100] = std::byte{0xAB};
    CHECK(h.wp_faults.load() == 1);
    CHECK(m.page(2)[100] == std::byte{0xAB});
    // Un-protected by the handler: the second write does not fault.
    m.page(2)[101] = std::byte{0xCD};
    CHECK(h.wp_faults.load() == 1);
    // Other pages are still protected.
    m.page(5)[0] = std::byte{1};
    CHECK(h.wp_faults.load() == 2);
}

TEST_CASE("copying onto a page that is already there reports exists, not an error") {
    auto u = open_uffd_without_events();
    Mapping m(2 * kPage);
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    alignas(4096) static std::byte src[2 * kPage];
    std::memset(src, 0x5A, sizeof src);
    auto first = u.copy(m.page(0), src, kPage);
    CHECK(first.status == uffd::Status::done);
    CHECK(first.bytes == kPage);
    auto again = u.copy(m.page(0), src, kPage);
    CHECK(again.status == uffd::Status::exists);
    CHECK(again.error == EEXIST);
    // Two pages where the second is present: the first lands (partial), the
    // rest reports exists.
    Mapping m2(2 * kPage);
    REQUIRE(u.register_range(m2.data(), m2.size(), uffd::Mode::missing).ok());
    REQUIRE(u.copy(m2.page(1), src, kPage).ok());
    auto part = u.copy(m2.page(0), src, 2 * kPage);
    CHECK(part.status == uffd::Status::partial);
    CHECK(part.bytes == kPage);
    CHECK(m2.page(0)[0] == std::byte{0x5A});
}

TEST_CASE("resolving into a range that was unmapped reports vanished") {
    auto u = open_uffd();
    Mapping m(2 * kPage);
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    // munmap waits until the monitor has read its UNMAP event.
    PatternHandler h(u);
    uffd::Monitor mon(u, h);
    REQUIRE(!mon.start());
    REQUIRE(::munmap(m.data(), m.size()) == 0);
    m.forget();
    alignas(4096) static std::byte src[kPage];
    auto out = u.copy(m.data(), src, kPage);
    CHECK(out.status == uffd::Status::vanished);
    CHECK(out.error == ENOENT);
}

TEST_CASE("registering an unaligned or unmapped range fails with a clear errno") {
    auto u = open_uffd_without_events();
    Mapping m(4 * kPage);
    auto unaligned = u.register_range(m.data() + 1, kPage, uffd::Mode::missing);
    REQUIRE(!unaligned.ok());
    CHECK(unaligned.error() == std::errc::invalid_argument);
    auto zero = u.register_range(m.data(), 0, uffd::Mode::missing);
    CHECK(!zero.ok());
    Mapping hole(kPage);
    void* addr = hole.data();
    ::munmap(addr, kPage);
    hole.forget();
    auto unmapped = u.register_range(addr, kPage, uffd::Mode::missing);
    REQUIRE(!unmapped.ok());
    // ioctl_userfaultfd(2): EINVAL when there is no mapping in the range.
    CHECK(unmapped.error() == std::errc::invalid_argument);
}

TEST_CASE("a second userfaultfd cannot take a range that the first one owns") {
    auto a = open_uffd_without_events();
    auto b = open_uffd();
    Mapping m(kPage);
    REQUIRE(a.register_range(m.data(), kPage, uffd::Mode::missing).ok());
    auto r = b.register_range(m.data(), kPage, uffd::Mode::missing);
    REQUIRE(!r.ok());
    CHECK(r.error() == std::errc::device_or_resource_busy);
}

TEST_CASE("UFFDIO_MOVE moves a page's contents into a missing page") {
    auto u = open_uffd_without_events();
    if (!u.has(uffd::feature::move)) {
        WARN("kernel without UFFDIO_MOVE (< 6.8): not covered");
        return;
    }
    Mapping src(kPage), dst(kPage);
    std::memset(src.data(), 0x77, kPage);
    REQUIRE(u.register_range(dst.data(), kPage, uffd::Mode::missing).ok());
    REQUIRE(u.register_range(src.data(), kPage, uffd::Mode::missing).ok());
    auto out = u.move(dst.data(), src.data(), kPage);
    REQUIRE(out.status == uffd::Status::done);
    CHECK(dst.data()[4095] == std::byte{0x77});
    // The source is now a hole: moving again reports it (ENOENT) unless
    // holes are allowed.
    Mapping dst2(kPage);
    REQUIRE(u.register_range(dst2.data(), kPage, uffd::Mode::missing).ok());
    CHECK(u.move(dst2.data(), src.data(), kPage).status == uffd::Status::vanished);
    CHECK(u.move(dst2.data(), src.data(), kPage, true, true).status != uffd::Status::failed);
}

TEST_CASE("a poisoned page kills only the process that touches it, with SIGBUS") {
    auto u = open_uffd();
    if (!u.has(uffd::feature::poison)) {
        WARN("kernel without UFFDIO_POISON (< 6.6): not covered");
        return;
    }
    Mapping m(kPage);
    REQUIRE(u.register_range(m.data(), kPage, uffd::Mode::missing).ok());
    REQUIRE(u.poison(m.data(), kPage).ok());
    // fork() waits until the monitor has read its FORK event.
    PatternHandler h(u);
    uffd::Monitor mon(u, h);
    REQUIRE(!mon.start());
    const pid_t child = ::fork();
    if (child == 0) {
        // Poisoned PTEs are copied to the child; touching one raises SIGBUS.
        // Sanitizers and Catch install SIGBUS handlers of their own: restore
        // the default with the raw syscall, past their interceptors.
        struct { void* handler; unsigned long flags; void* restorer; unsigned long mask; } dfl{};
        dfl.handler = reinterpret_cast<void*>(SIG_DFL);
        ::syscall(SYS_rt_sigaction, SIGBUS, &dfl, nullptr, sizeof dfl.mask);
        volatile std::byte b = m.data()[0];
        (void)b;
        ::_exit(0);
    }
    REQUIRE(child > 0);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGBUS);
}
