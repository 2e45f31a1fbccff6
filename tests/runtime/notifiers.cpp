// The runtime tells devices' notifiers what happens to the memory they
// mirror: munmap and mremap (unmap), madvise (clear), migrations (migrate,
// with the owner), pages a CPU fault brought home (migrate), fork (fork) and
// its own end (release). Real events, a recording notifier.
#include <catch2/catch.hpp>

#include <uhmm/mirror.hpp>

#include <sys/wait.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;
using mirror::Event;
using mirror::Invalidation;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

struct Recorder : mirror::Notifier {
    std::mutex m;
    std::vector<Invalidation> calls;
    bool invalidate(const Invalidation& inv, std::uint64_t) noexcept override {
        std::lock_guard lock(m);
        calls.push_back(inv);
        return true;
    }
    // The calls with this event, waiting (the fault thread's are delivered
    // from another thread, shortly after).
    std::vector<Invalidation> with(Event e, std::size_t at_least = 1) {
        std::vector<Invalidation> out;
        (void)eventually([&] {
            std::lock_guard lock(m);
            out.clear();
            for (const auto& c : calls)
                if (c.event == e) out.push_back(c);
            return out.size() >= at_least;
        });
        return out;
    }
    std::size_t count(Event e) {
        std::lock_guard lock(m);
        std::size_t n = 0;
        for (const auto& c : calls) n += c.event == e;
        return n;
    }
};

bool covers(const Invalidation& inv, const void* p, std::size_t len) {
    return inv.start <= addr_of(p) && inv.end >= addr_of(p) + len;
}

}  // namespace

TEST_CASE("munmap, madvise and mremap reach the notifiers as unmap, clear and unmap") {
    auto rt = make_runtime();
    constexpr std::size_t len = 64 * kPage;
    ManagedPattern m(*rt, len);
    Recorder dev, elsewhere;
    REQUIRE(!rt->notifiers().insert(dev, addr_of(m.data()), len));
    Mapping other(kPage);
    REQUIRE(!rt->notifiers().insert(elsewhere, addr_of(other.data()), kPage));

    SECTION("madvise(DONTNEED) of a page range: clear") {
        REQUIRE(::madvise(m.page(3), 2 * kPage, MADV_DONTNEED) == 0);
        const auto c = dev.with(Event::clear);
        REQUIRE(c.size() == 1);
        CHECK(c[0].start == addr_of(m.page(3)));
        CHECK(c[0].end == addr_of(m.page(5)));
        CHECK(c[0].blockable);
    }
    SECTION("munmap of part of it: unmap") {
        REQUIRE(::munmap(m.page(10), 4 * kPage) == 0);
        const auto u = dev.with(Event::unmap);
        REQUIRE(u.size() == 1);
        CHECK(u[0].start == addr_of(m.page(10)));
        CHECK(u[0].end == addr_of(m.page(14)));
    }
    SECTION("mremap moving it away: unmap of the old addresses") {
        void* dst = ::mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(dst != MAP_FAILED);
        void* moved = ::mremap(m.data(), len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
        REQUIRE(moved == dst);
        const auto u = dev.with(Event::unmap);
        REQUIRE(!u.empty());
        CHECK(covers(u[0], m.data(), len));
        CHECK(first_mismatch_at(static_cast<std::byte*>(moved), len, addr_of(m.data())) == len);
        rt->notifiers().remove(dev);
        REQUIRE(!rt->unmanage(moved, len));
        ::munmap(moved, len);
        m.forget();
    }
    CHECK(elsewhere.count(Event::clear) + elsewhere.count(Event::unmap) == 0);
    rt->notifiers().remove(dev);
    rt->notifiers().remove(elsewhere);
}

TEST_CASE("migrations reach the notifiers as migrate, with the owner who asked") {
    auto rt = make_runtime();
    constexpr std::size_t len = 32 * kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    Recorder dev, other;
    REQUIRE(!rt->notifiers().insert(dev, addr_of(p), len));
    REQUIRE(!rt->notifiers().insert(other, addr_of(p) + 16 * kPage, 16 * kPage));

    REQUIRE(rt->migrate(p, len, Target::device, &dev).ok());
    auto mig = dev.with(Event::migrate);
    REQUIRE(mig.size() == 1);
    CHECK(mig[0].owner == &dev);   // its own: a device skips it
    CHECK(covers(mig[0], p, len));
    REQUIRE(other.with(Event::migrate).size() == 1);
    CHECK(other.with(Event::migrate)[0].owner == &dev);   // not its own

    // A CPU touch brings a window home: migrate, from the CPU (no owner).
    CHECK(first_mismatch(p, kPage) == kPage);
    mig = dev.with(Event::migrate, 2);
    REQUIRE(mig.size() >= 2);
    CHECK(mig[1].owner == nullptr);
    CHECK(covers(mig[1], p, kPage));

    REQUIRE(rt->migrate(p, len, Target::host).ok());
    CHECK(dev.with(Event::migrate, 3).size() == 3);
    CHECK(first_mismatch(p, len) == len);
    rt->notifiers().remove(dev);
    rt->notifiers().remove(other);
}

TEST_CASE("fork tells the notifiers fork; the runtime's end tells them release") {
    Recorder dev;
    constexpr std::size_t len = 8 * kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    {
        auto rt = make_runtime();
        REQUIRE(!rt->manage(m.data(), len));
        REQUIRE(!rt->notifiers().insert(dev, addr_of(m.data()), len));
        REQUIRE(migrate_ok(*rt, m.data(), len, Target::device).migrated == len / kPage);
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) ::_exit(first_mismatch(m.data(), len) == len ? 0 : 1);
        CHECK(child_exit_code(wait_child(child)) == 0);
        const auto f = dev.with(Event::fork);
        REQUIRE(f.size() == 1);
        CHECK(covers(f[0], m.data(), len));
        CHECK(dev.count(Event::release) == 0);
        REQUIRE(migrate_ok(*rt, m.data(), len, Target::device).migrated == len / kPage);
    }
    // The runtime is gone: release came first, every page is home, and the
    // notifier is no longer in a registry.
    CHECK(dev.count(Event::release) == 1);
    CHECK(!dev.inserted());
    CHECK(first_mismatch(m.data(), len) == len);
}

TEST_CASE("release() of allocated memory tells the notifiers unmap (its munmap sends no event)") {
    auto rt = make_runtime();
    constexpr std::size_t len = 16 * kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    Recorder dev;
    REQUIRE(!rt->notifiers().insert(dev, addr_of(*a), len));
    REQUIRE(!rt->release(*a, len));
    const auto u = dev.with(Event::unmap);
    REQUIRE(u.size() == 1);
    CHECK(covers(u[0], *a, len));
    rt->notifiers().remove(dev);
}

TEST_CASE("protect(): mprotect, then a blockable protection invalidation of that interval only") {
    auto rt = make_runtime();
    constexpr std::size_t len = 16 * kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    Recorder dev, elsewhere;
    REQUIRE(!rt->notifiers().insert(dev, addr_of(m.data()), len));
    Mapping other(kPage);
    REQUIRE(!rt->notifiers().insert(elsewhere, addr_of(other.data()), kPage));

    // Unmanaged memory too: a device may mirror any of it.
    REQUIRE(!rt->protect(m.page(4), 2 * kPage, PROT_READ));
    auto p = dev.with(Event::protection);
    REQUIRE(p.size() == 1);
    CHECK(p[0].start == addr_of(m.page(4)));
    CHECK(p[0].end == addr_of(m.page(6)));
    CHECK(p[0].blockable);
    CHECK(elsewhere.count(Event::protection) == 0);
    CHECK(first_mismatch(m.data(), len) == len);   // still readable, data kept

    // The protection really changed: range_fault refuses a write there.
    std::vector<std::uint64_t> pfns(2);
    mirror::Range r;
    r.start = addr_of(m.page(4));
    r.end = addr_of(m.page(6));
    r.pfns = pfns.data();
    r.default_flags = mirror::pfn::req_fault | mirror::pfn::req_write;
    CHECK(mirror::range_fault(*rt, r) == std::errc::operation_not_permitted);

    // Errors: mprotect's own, and bad arguments, say so.
    CHECK(rt->protect(reinterpret_cast<void*>(addr_of(m.data()) + 1), kPage, PROT_READ) == std::errc::invalid_argument);
    CHECK(rt->protect(m.data(), 0, PROT_READ) == std::errc::invalid_argument);
    CHECK(rt->protect(m.data(), len, 0x7fff0000) == std::errc::invalid_argument);
    rt->notifiers().remove(dev);
    rt->notifiers().remove(elsewhere);
}

namespace {

// A device whose lock is busy: it refuses non-blockable invalidations
// ("would block") the first `refusals` times it is asked.
struct BusyDevice : mirror::Notifier {
    std::atomic<int> refusals{0};
    std::atomic<int> calls{0}, refused{0};
    bool invalidate(const Invalidation& inv, std::uint64_t) noexcept override {
        ++calls;
        if (!inv.blockable && refusals.load() > 0) {
            --refusals;
            ++refused;
            return false;
        }
        return true;
    }
};

}  // namespace

TEST_CASE("non-blockable migrations: a busy device makes the runtime back off, retry, then give up with EAGAIN") {
    auto rt = make_runtime();
    constexpr std::size_t len = 8 * kPage;
    ManagedPattern m(*rt, len);
    std::byte* p = m.data();
    BusyDevice dev;
    REQUIRE(!rt->notifiers().insert(dev, addr_of(p), len));
    const Runtime::MigrateOptions background{nullptr, false};

    SECTION("busy once: the retry goes through, the pages move") {
        dev.refusals = 1;
        auto r = rt->migrate(p, len, Target::device, background);
        REQUIRE(r.ok());
        CHECK(r->migrated == len / kPage);
        CHECK(!r->error);
        CHECK(dev.refused == 1);
        CHECK(dev.calls == 2);
        CHECK(rt->stats().migrations_would_block == 0);
        CHECK(*rt->state(p) == PageState::device);
    }
    SECTION("busy for good: nothing moves, every page failed, EAGAIN") {
        dev.refusals = 1000;
        auto r = rt->migrate(p, len, Target::device, background);
        REQUIRE(r.ok());
        CHECK(r->requested == len / kPage);
        CHECK(r->migrated == 0);
        CHECK(r->failed == len / kPage);
        CHECK(r->error == std::errc::resource_unavailable_try_again);
        CHECK(dev.refused == 4);   // the first ask and three retries
        CHECK(rt->stats().migrations_would_block == 1);
        std::vector<PageState> where(len / kPage);
        REQUIRE(!rt->residency(p, len, where));
        for (auto s : where) CHECK(s == PageState::host);
        CHECK(first_mismatch(p, len) == len);
    }
    SECTION("a blockable migration may not be refused: it goes through") {
        dev.refusals = 1000;
        auto r = rt->migrate(p, len, Target::device, Runtime::MigrateOptions{nullptr, true});
        REQUIRE(r.ok());
        CHECK(r->migrated == len / kPage);
        CHECK(dev.refused == 0);
        CHECK(first_mismatch(p, len) == len);
    }
    rt->notifiers().remove(dev);
}
