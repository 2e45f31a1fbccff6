// Runtime::prefetch / prefetch_async / prefetch_fence (cudaMemPrefetchAsync):
// the pages holding the bytes asked for move (rounded out to whole pages),
// page by page as the result says; to the host never-touched pages are
// filled so the CPU then takes no fault; errors move nothing; asynchronous
// prefetches run in order, their fences complete in order, and a runtime
// that goes away cancels what has not started.
#include <catch2/catch.hpp>

#include <uhmm/soft_device.hpp>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

// A notifier that holds every migrate invalidation of its interval until
// opened: the prefetch thread, migrating that interval, stops there, so
// what is queued behind it is known to be waiting. It touches no managed
// memory (the rule for callbacks).
struct Gate : mirror::Notifier {
    std::mutex m;
    std::condition_variable cv;
    bool open = false;
    std::atomic<int> entered{0};
    bool invalidate(const mirror::Invalidation& inv, std::uint64_t) noexcept override {
        if (inv.event != mirror::Event::migrate) return true;
        entered.fetch_add(1);
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return open; });
        return true;
    }
    void let_go() {
        {
            std::lock_guard lock(m);
            open = true;
        }
        cv.notify_all();
    }
};

Result<MigrateResult> prefetch_ok(Runtime& rt, const void* p, std::size_t len, Target to,
                                  const void* device = nullptr) {
    auto r = rt.prefetch(p, len, to, device);
    INFO("prefetch: " << r.error().message());
    REQUIRE(r.ok());
    return r;
}

// Unmanaged, untouched memory made managed (every page NONE).
struct ManagedUntouched : Mapping {
    ManagedUntouched(Runtime& rt, std::size_t len) : Mapping(len) {
        REQUIRE(*this);
        REQUIRE(!rt.manage(data(), len));
    }
};

}  // namespace

TEST_CASE("prefetch to the device moves every page; to the host brings every one back, data intact", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 64, len = pages * kPage;
    ManagedPattern m(*rt, len);
    const auto before = rt->stats().prefetches;

    auto d = prefetch_ok(*rt, m.data(), len, Target::device);
    CHECK(d->requested == pages);
    CHECK(d->migrated == pages);
    CHECK(d->failed == 0);
    CHECK(count_state(*rt, m.data(), len, PageState::device) == pages);
    CHECK(cpu_mapped_pages(m.data(), len) == 0);

    // Again: nothing left to move.
    auto again = prefetch_ok(*rt, m.data(), len, Target::device);
    CHECK(again->already_there == pages);
    CHECK(again->migrated == 0);

    auto h = prefetch_ok(*rt, m.data(), len, Target::host);
    CHECK(h->requested == pages);
    CHECK(h->migrated == pages);
    CHECK(count_state(*rt, m.data(), len, PageState::host) == pages);
    // The CPU's pass over it takes no fault at all.
    const auto faults = rt->stats().faults;
    CHECK(first_mismatch(m.data(), len) == len);
    CHECK(rt->stats().faults == faults);
    CHECK(rt->stats().prefetches == before + 3);
}

TEST_CASE("prefetch to the host fills never-touched pages: the CPU then reads and writes without a fault",
          "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 96, len = pages * kPage;
    ManagedUntouched m(*rt, len);
    // A mix: pages 0-31 never touched, 32-63 host, 64-95 on the device.
    fill_pattern(m.page(32), 64 * kPage);
    // Filling 32-95 may have zero-filled a window below 32 too: make the
    // first 32 untouched again.
    REQUIRE(::madvise(m.data(), 32 * kPage, MADV_DONTNEED) == 0);
    REQUIRE(eventually([&] { return try_count_state(*rt, m.data(), 32 * kPage, PageState::none) == 32u; }));
    migrate_ok(*rt, m.page(64), 32 * kPage, Target::device);
    REQUIRE(count_state(*rt, m.page(64), 32 * kPage, PageState::device) == 32);

    auto h = prefetch_ok(*rt, m.data(), len, Target::host);
    CHECK(h->requested == pages);
    CHECK(h->failed == 0);
    CHECK(h->migrated + h->already_there == pages);
    CHECK(h->migrated >= 64);   // 32 filled, 32 home
    CHECK(count_state(*rt, m.data(), len, PageState::host) == pages);

    const auto faults = rt->stats().faults;
    CHECK(first_nonzero(m.data(), 32 * kPage) == 32 * kPage);
    CHECK(first_mismatch(m.page(32), 64 * kPage) == 64 * kPage);
    // Writes too: the filled pages are the process's own, writable.
    for (std::size_t i = 0; i < pages; ++i) *reinterpret_cast<volatile std::uint8_t*>(m.page(i) + 17) = 1;
    CHECK(rt->stats().faults == faults);
}

TEST_CASE("prefetch rounds an unaligned address and length out to whole pages", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 16, len = pages * kPage;
    ManagedPattern m(*rt, len);
    // 100 bytes into page 3, one page long: pages 3 and 4.
    auto d = prefetch_ok(*rt, m.page(3) + 100, kPage, Target::device);
    CHECK(d->requested == 2);
    CHECK(d->migrated == 2);
    auto s = states(*rt, m.data(), len);
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        CHECK(s[i] == (i == 3 || i == 4 ? PageState::device : PageState::host));
    }
    // One byte at the end of page 7: page 7 alone.
    auto one = prefetch_ok(*rt, m.page(7) + kPage - 1, 1, Target::device);
    CHECK(one->requested == 1);
    CHECK(rt->state(m.page(7)).value() == PageState::device);
    CHECK(rt->state(m.page(8)).value() == PageState::host);
    CHECK(rt->state(m.page(6)).value() == PageState::host);
    // And home the same way: the two pages of an object straddling them.
    auto h = prefetch_ok(*rt, m.page(4) - 8, 16, Target::host);
    CHECK(h->requested == 2);
    CHECK(rt->state(m.page(3)).value() == PageState::host);
    CHECK(rt->state(m.page(4)).value() == PageState::host);
    CHECK(rt->state(m.page(7)).value() == PageState::device);
    CHECK(first_mismatch(m.data(), len) == len);
}

TEST_CASE("prefetch errors: EINVAL, EFAULT, nothing moved", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 8, len = pages * kPage;
    // The managed range is followed by memory the runtime does not manage.
    Mapping both(2 * len);
    REQUIRE(both);
    fill_pattern(both.data(), 2 * len);
    REQUIRE(!rt->manage(both.data(), len));
    std::byte* managed = both.data();
    std::byte* unmanaged = both.data() + len;

    auto expect = [&](Result<MigrateResult> r, std::errc e) {
        INFO("got: " << (r ? std::string("success") : r.error().message()));
        REQUIRE(!r.ok());
        CHECK(r.error() == e);
    };
    auto expect_async = [&](Result<PrefetchFence> r, std::errc e) {
        INFO("got: " << (r ? std::string("success") : r.error().message()));
        REQUIRE(!r.ok());
        CHECK(r.error() == e);
    };
    for (Target to : {Target::device, Target::host}) {
        INFO("to " << (to == Target::device ? "device" : "host"));
        expect(rt->prefetch(managed, 0, to), std::errc::invalid_argument);
        expect(rt->prefetch(managed + 100, std::numeric_limits<std::size_t>::max() - 50, to),
               std::errc::invalid_argument);
        expect(rt->prefetch(unmanaged, kPage, to), std::errc::bad_address);
        // Partly managed: refused whole.
        expect(rt->prefetch(managed + len - kPage, 2 * kPage, to), std::errc::bad_address);
        expect_async(rt->prefetch_async(managed, 0, to), std::errc::invalid_argument);
        expect_async(rt->prefetch_async(managed + 100, std::numeric_limits<std::size_t>::max() - 50, to),
                     std::errc::invalid_argument);
        expect_async(rt->prefetch_async(unmanaged, kPage, to), std::errc::bad_address);
        expect_async(rt->prefetch_async(managed + len - kPage, 2 * kPage, to), std::errc::bad_address);
    }
    expect(rt->prefetch(managed, kPage, static_cast<Target>(7)), std::errc::invalid_argument);
    expect_async(rt->prefetch_async(managed, kPage, static_cast<Target>(7)), std::errc::invalid_argument);
    CHECK(count_state(*rt, managed, len, PageState::host) == pages);
    CHECK(rt->stats().pages_to_device == 0);
    CHECK(rt->stats().prefetches == 0);
    CHECK(first_mismatch(both.data(), 2 * len) == 2 * len);
    // Nothing was queued either.
    CHECK(rt->prefetch_fence().ready());
}

TEST_CASE("prefetch for a device: the SoftDevice sees the pages as its own and they stay on the device",
          "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 16, len = pages * kPage;
    ManagedPattern m(*rt, len);
    auto made = mirror::SoftDevice::create(*rt, m.data(), len);
    REQUIRE(made.ok());
    auto& dev = **made;
    std::vector<std::byte> buf(len);

    SECTION("a device with no entries yet") {}
    SECTION("a device that had mapped the host pages before") {
        auto r = dev.read(m.data(), len, buf.data());
        REQUIRE(r.ok());
        REQUIRE(dev.entries() == pages);
    }
    auto d = prefetch_ok(*rt, m.data(), len, Target::device, &dev);
    CHECK(d->migrated == pages);
    REQUIRE(count_state(*rt, m.data(), len, PageState::device) == pages);

    std::fill(buf.begin(), buf.end(), std::byte{0});
    auto r = dev.read(m.data(), len, buf.data());
    REQUIRE(r.ok());
    CHECK(r->cpages == pages);
    CHECK(r->faults <= 1);
    CHECK(first_mismatch_at(buf.data(), len, addr_of(m.data())) == len);
    // Read where they are: no page came home for it.
    CHECK(count_state(*rt, m.data(), len, PageState::device) == pages);
    CHECK(rt->stats().pages_to_host == 0);
    // A second read takes no fault at all.
    auto again = dev.read(m.data(), len, buf.data());
    REQUIRE(again.ok());
    CHECK(again->faults == 0);
    CHECK(count_state(*rt, m.data(), len, PageState::device) == pages);

    // The device writes to them in place too.
    std::vector<std::byte> in(len);
    fill_pattern_at(in.data(), addr_of(m.data()), len, 5);
    auto w = dev.write(m.data(), len, in.data());
    REQUIRE(w.ok());
    CHECK(count_state(*rt, m.data(), len, PageState::device) == pages);
    // The CPU brings them home with the device's data.
    CHECK(first_mismatch_salted(m.data(), len, 5) == len);
}

TEST_CASE("prefetch for no device: a SoftDevice's read brings the pages home (the control)", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 16, len = pages * kPage;
    ManagedPattern m(*rt, len);
    auto made = mirror::SoftDevice::create(*rt, m.data(), len);
    REQUIRE(made.ok());
    auto d = prefetch_ok(*rt, m.data(), len, Target::device);
    CHECK(d->migrated == pages);
    std::vector<std::byte> buf(len);
    auto r = (*made)->read(m.data(), len, buf.data());
    REQUIRE(r.ok());
    CHECK(r->faults >= 1);
    CHECK(first_mismatch_at(buf.data(), len, addr_of(m.data())) == len);
    CHECK(count_state(*rt, m.data(), len, PageState::host) == pages);
}

// ---- asynchronous -------------------------------------------------------------------------

TEST_CASE("prefetch_async: fences complete in order, each with its own result", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t n = 8, pages = 64, len = pages * kPage;
    std::vector<std::unique_ptr<ManagedPattern>> ms;
    for (std::size_t i = 0; i < n; ++i) ms.push_back(std::make_unique<ManagedPattern>(*rt, len));
    // The first is held at its invalidation until every other is queued.
    Gate gate;
    REQUIRE(!rt->notifiers().insert(gate, addr_of(ms[0]->data()), len));

    std::vector<PrefetchFence> fences;
    for (std::size_t i = 0; i < n; ++i) {
        // Each a different size: i + 1 pages... of its own range, to the device.
        auto f = rt->prefetch_async(ms[i]->data(), (i + 1) * kPage, Target::device);
        INFO("prefetch_async " << i << ": " << f.error().message());
        REQUIRE(f.ok());
        fences.push_back(*f);
    }
    REQUIRE(eventually([&] { return gate.entered.load() > 0; }));
    auto all_fence = rt->prefetch_fence();
    // Held: none has finished, not even the whole-queue fence.
    for (const auto& f : fences) CHECK(!f.ready());
    CHECK(!all_fence.ready());
    CHECK(!fences.back().wait_for(std::chrono::milliseconds(20)));

    std::atomic<bool> order_broken{false};
    std::atomic<bool> watching{true};
    std::thread watcher([&] {
        // A later fence ready implies every earlier one is.
        while (watching.load()) {
            std::vector<bool> ready;
            for (auto it = fences.rbegin(); it != fences.rend(); ++it) ready.push_back(it->ready());
            // ready[] is newest first: once one is ready, every older one must be.
            bool seen = false;
            for (bool r : ready) {
                if (seen && !r) order_broken = true;
                seen |= r;
            }
        }
    });
    gate.let_go();
    auto last = fences.back().wait();
    watching = false;
    watcher.join();
    CHECK(!order_broken.load());
    REQUIRE(last.ok());
    for (std::size_t i = 0; i < n; ++i) {
        INFO("fence " << i);
        CHECK(fences[i].ready());
        auto r = fences[i].wait();
        REQUIRE(r.ok());
        CHECK(r->requested == i + 1);
        CHECK(r->migrated == i + 1);
        CHECK(r->failed == 0);
        CHECK(count_state(*rt, ms[i]->data(), len, PageState::device) == i + 1);
        CHECK(count_state(*rt, ms[i]->data(), len, PageState::host) == pages - (i + 1));
    }
    auto a = all_fence.wait();
    REQUIRE(a.ok());
    CHECK(a->requested == 0);
    CHECK(rt->stats().prefetches == n);
    rt->notifiers().remove(gate);
    for (auto& m : ms) CHECK(first_mismatch(m->data(), len) == len);
}

TEST_CASE("prefetch_fence waits for everything queued; with nothing queued it is ready", "[runtime]") {
    auto rt = make_runtime();
    CHECK(rt->prefetch_fence().ready());
    CHECK(PrefetchFence().ready());
    auto empty = PrefetchFence().wait();
    REQUIRE(empty.ok());
    CHECK(empty->requested == 0);

    constexpr std::size_t pages = 256, len = pages * kPage;
    ManagedPattern a(*rt, len), b(*rt, len);
    REQUIRE(rt->prefetch_async(a.data(), len, Target::device).ok());
    REQUIRE(rt->prefetch_async(b.data(), len, Target::device).ok());
    REQUIRE(rt->prefetch_async(a.data(), len / 2, Target::host).ok());
    auto f = rt->prefetch_fence();
    auto r = f.wait();
    REQUIRE(r.ok());
    CHECK(r->requested == 0);
    // Everything before it has happened.
    CHECK(count_state(*rt, a.data(), len / 2, PageState::host) == pages / 2);
    CHECK(count_state(*rt, a.data() + len / 2, len / 2, PageState::device) == pages / 2);
    CHECK(count_state(*rt, b.data(), len, PageState::device) == pages);
    CHECK(rt->stats().prefetches == 3);
    // Idle again: a new fence is ready at once.
    CHECK(rt->prefetch_fence().ready());
    CHECK(first_mismatch(a.data(), len) == len);
    CHECK(first_mismatch(b.data(), len) == len);
}

TEST_CASE("the CPU writes to a range while its prefetch to the device is in flight: nothing is lost",
          "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 4096, len = pages * kPage;   // 16 MiB
    ManagedPattern m(*rt, len);
    const int rounds = static_cast<int>(scaled(8));
    for (int round = 1; round <= rounds; ++round) {
        auto f = rt->prefetch_async(m.data(), len, Target::device);
        REQUIRE(f.ok());
        // Word 1 of every page gets this round's number while the pages move
        // (the rest of each page keeps the pattern).
        std::size_t written = 0;
        for (std::size_t i = 0; i < pages; ++i) {
            std::uint64_t v = static_cast<std::uint64_t>(round) << 32 | i;
            std::memcpy(m.page(i) + 8, &v, sizeof v);
            ++written;
        }
        auto r = f->wait();
        REQUIRE(r.ok());
        CHECK(r->requested == pages);
        CHECK(r->migrated + r->already_there + r->failed == pages);
        // Every page: its word 1 is this round's, the rest the pattern.
        std::size_t bad = 0;
        for (std::size_t i = 0; i < pages; ++i) {
            std::uint64_t v = 0;
            std::memcpy(&v, m.page(i) + 8, sizeof v);
            if (v != (static_cast<std::uint64_t>(round) << 32 | i)) ++bad;
            else if (first_mismatch(m.page(i), 8) != 8 ||
                     first_mismatch_at(m.page(i) + 16, kPage - 16, addr_of(m.page(i)) + 16) != kPage - 16)
                ++bad;
        }
        INFO("round " << round << ": " << bad << " pages wrong; write waits " << rt->stats().write_waits);
        CHECK(bad == 0);
        CHECK(written == pages);
    }
}

TEST_CASE("a runtime destroyed with prefetches queued: the running one finishes, the rest are ECANCELED",
          "[runtime]") {
    Watchdog dog(120, "destroying a runtime with queued prefetches");
    constexpr std::size_t n = 6, pages = 32, len = pages * kPage;
    std::vector<std::unique_ptr<Mapping>> ms;
    for (std::size_t i = 0; i < n; ++i) {
        ms.push_back(std::make_unique<Mapping>(len));
        REQUIRE(*ms.back());
        fill_pattern(ms.back()->data(), len);
    }
    Gate gate;   // outlives the runtime (its registry lets it go)
    auto rt = make_runtime();
    for (auto& m : ms) REQUIRE(!rt->manage(m->data(), len));
    REQUIRE(!rt->notifiers().insert(gate, addr_of(ms[0]->data()), len));
    std::vector<PrefetchFence> fences;
    for (std::size_t i = 0; i < n; ++i) {
        auto f = rt->prefetch_async(ms[i]->data(), len, i % 2 ? Target::host : Target::device);
        REQUIRE(f.ok());
        fences.push_back(*f);
    }
    REQUIRE(eventually([&] { return gate.entered.load() > 0; }));
    std::thread opener([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        gate.let_go();
    });
    rt.reset();
    opener.join();
    for (std::size_t i = 0; i < n; ++i) {
        INFO("fence " << i);
        REQUIRE(fences[i].ready());
        auto r = fences[i].wait();
        if (i == 0) {
            REQUIRE(r.ok());
            CHECK(r->requested == pages);
            CHECK(r->migrated == pages);
        } else {
            REQUIRE(!r.ok());
            CHECK(r.error() == std::errc::operation_canceled);
        }
    }
    for (auto& m : ms) CHECK(first_mismatch(m->data(), len) == len);
}

TEST_CASE("a runtime destroyed with many prefetches queued never hangs; each fence is a result or ECANCELED",
          "[runtime]") {
    Watchdog dog(120, "destroying a runtime with queued prefetches");
    constexpr std::size_t n = 32, len = 1 * MiB;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    std::vector<PrefetchFence> fences;
    {
        auto rt = make_runtime();
        REQUIRE(!rt->manage(m.data(), len));
        for (std::size_t i = 0; i < n; ++i) {
            auto f = rt->prefetch_async(m.data(), len, i % 2 ? Target::host : Target::device);
            REQUIRE(f.ok());
            fences.push_back(*f);
        }
    }
    std::size_t done = 0, cancelled = 0;
    for (auto& f : fences) {
        REQUIRE(f.ready());
        auto r = f.wait();
        if (r) {
            CHECK(r->requested == len / kPage);
            ++done;
        } else {
            CHECK(r.error() == std::errc::operation_canceled);
            ++cancelled;
        }
    }
    CHECK(done + cancelled == n);
    // Cancelled ones come after every finished one.
    for (std::size_t i = 1; i < n; ++i)
        if (fences[i].wait().ok()) CHECK(fences[i - 1].wait().ok());
    CHECK(first_mismatch(m.data(), len) == len);
}

TEST_CASE("a prefetch whose memory was unmapped before it ran: EFAULT", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t len = 16 * kPage;
    ManagedPattern a(*rt, len);
    Mapping b(len);
    REQUIRE(b);
    fill_pattern(b.data(), len);
    REQUIRE(!rt->manage(b.data(), len));
    Gate gate;
    REQUIRE(!rt->notifiers().insert(gate, addr_of(a.data()), len));
    auto fa = rt->prefetch_async(a.data(), len, Target::device);
    REQUIRE(fa.ok());
    REQUIRE(eventually([&] { return gate.entered.load() > 0; }));
    auto fb = rt->prefetch_async(b.data(), len, Target::device);
    REQUIRE(fb.ok());   // checked now: managed
    REQUIRE(::munmap(b.data(), len) == 0);
    b.forget();
    // The range is gone once the unmap event is handled.
    REQUIRE(eventually([&] { return !rt->manages(b.data(), len); }));
    gate.let_go();
    auto rb = fb->wait();
    INFO("got " << (rb ? "a result" : rb.error().message()));
    REQUIRE(!rb.ok());
    CHECK(rb.error() == std::errc::bad_address);
    auto ra = fa->wait();
    REQUIRE(ra.ok());
    CHECK(ra->migrated == len / kPage);
    rt->notifiers().remove(gate);
    CHECK(first_mismatch(a.data(), len) == len);
}
