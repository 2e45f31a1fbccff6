// EAGAIN while an event is pending: a resolve ioctl says "retry" (the
// address space is changing), and the monitor parks the fault, reads the
// event, and re-drives it — without a blocking retry loop.
#include <catch2/catch.hpp>

#include <poll.h>

#include <atomic>
#include <thread>

#include "fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

// Wait until the userfaultfd has a message queued (the madvise's event).
bool wait_readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 10000) == 1;
}

}  // namespace

TEST_CASE("a copy while an event is unread reports retry, and lands once it is read") {
    Mapping m(4 * kPage);   // outlives the userfaultfd: its munmap needs no reader
    auto opened = uffd::Uffd::open();
    REQUIRE(opened.ok());
    auto& u = *opened;
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());

    // madvise on a registered range waits until its REMOVE event is read.
    std::thread remover([&] { ::madvise(m.page(3), kPage, MADV_DONTNEED); });
    REQUIRE(wait_readable(u.fd()));

    alignas(4096) static std::byte src[kPage];
    std::memset(src, 0x33, kPage);
    auto blocked = u.copy(m.page(0), src, kPage);
    CHECK(blocked.status == uffd::Status::retry);
    CHECK(blocked.error == EAGAIN);

    auto events = u.read_events();
    REQUIRE(events.ok());
    REQUIRE(events->size() == 1);
    CHECK(std::holds_alternative<uffd::Remove>((*events)[0]));
    remover.join();   // returns only after the kernel saw the event read

    auto landed = u.copy(m.page(0), src, kPage);
    CHECK(landed.status == uffd::Status::done);
    CHECK(m.page(0)[123] == std::byte{0x33});
}

namespace {

// On its first fault, makes another thread start a madvise (an event the
// monitor has not read yet) before resolving, so the resolve must say retry.
class RacingHandler : public PatternHandler {
public:
    RacingHandler(uffd::Uffd& u, std::byte* victim) : PatternHandler(u), victim_(victim) {}
    ~RacingHandler() override { if (remover_.joinable()) remover_.join(); }

    uffd::FaultDisposition on_fault(const uffd::PageFault& f) noexcept override {
        if (!raced_) {
            raced_ = true;
            remover_ = std::thread([this] { ::madvise(victim_, kPage, MADV_DONTNEED); });
            event_was_pending = wait_readable(uffd_.fd());
        }
        return PatternHandler::on_fault(f);
    }

    std::atomic<bool> event_was_pending{false};   // set on the reader, read by the test

private:
    std::byte* victim_;
    bool raced_ = false;
    std::thread remover_;
};

}  // namespace

TEST_CASE("the monitor parks a fault that hit a pending event and re-drives it after reading the event") {
    Mapping m(4 * kPage);
    auto opened = uffd::Uffd::open();
    REQUIRE(opened.ok());
    auto& u = *opened;
    REQUIRE(u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    RacingHandler h(u, m.page(3));
    uffd::Monitor mon(u, h);
    REQUIRE(!mon.start());

    // The faulting thread must get its data although the first resolve failed.
    CHECK(first_mismatch(m.page(0), kPage) == kPage);
    CHECK(h.event_was_pending);
    CHECK(h.retries.load() >= 1);
    const auto st = mon.stats();
    CHECK(st.deferred >= 1);
    CHECK(st.redriven >= 1);
    CHECK(h.failures.load() == 0);
    CHECK(eventually([&] { std::lock_guard l(h.lock); return h.removes.size() == 1; }));
}
