// Runtime::advise / advice (cudaMemAdvise): what each advice does, measured
// against a range without it in the same runtime, and what each refuses.
//
//   preferred_location=host    chaos and tier never send the pages away
//   preferred_location=device  a CPU touch brings (or fills) one page, not a
//                              window; tier sends host-resident ones back
//   accessed_by                a SoftDevice maps the pages where they are,
//                              at once and again after each migration, and
//                              its reads leave device pages on the device
//   read_mostly                a device read makes replicas, the pages stay
//                              on the host, a CPU write drops the replica
#include <catch2/catch.hpp>

#include <uhmm/soft_device.hpp>

#include <atomic>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;
using mirror::SoftDevice;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

std::vector<std::uint8_t> bits_of(const Runtime& rt, const void* p, std::size_t len) {
    std::vector<std::uint8_t> out(len / kPage, 0xEE);
    const auto ec = rt.advice(p, len, out);
    INFO("advice: " << ec.message());
    REQUIRE(!ec);
    return out;
}

std::size_t count_bits(const std::vector<std::uint8_t>& v, std::uint8_t bit) {
    return static_cast<std::size_t>(std::count_if(v.begin(), v.end(), [&](std::uint8_t b) { return (b & bit) != 0; }));
}

void advise_ok(Runtime& rt, const void* p, std::size_t len, Advice a, AdviceTarget t = {}) {
    std::string why;
    const auto ec = rt.advise(p, len, a, t, &why);
    INFO("advise(" << static_cast<int>(a) << "): " << ec.message() << ": " << why);
    REQUIRE(!ec);
}

std::unique_ptr<SoftDevice> device_on(Runtime& rt, void* p, std::size_t len) {
    auto d = SoftDevice::create(rt, p, len);
    INFO("SoftDevice::create: " << d.error().message());
    REQUIRE(d.ok());
    return std::move(d).value();
}

std::uint64_t word(const std::byte* p) {
    std::uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// A device whose populate() works until told to fail (accessed_by's refusal).
struct Flaky : mirror::Notifier {
    bool fail = false;
    bool invalidate(const mirror::Invalidation&, std::uint64_t) noexcept override { return true; }
    std::error_code populate(std::uintptr_t, std::uintptr_t) noexcept override {
        return fail ? std::make_error_code(std::errc::not_supported) : std::error_code{};
    }
};

// Counts populate() calls.
struct Counting : mirror::Notifier {
    std::atomic<int> populates{0};
    bool invalidate(const mirror::Invalidation&, std::uint64_t) noexcept override { return true; }
    std::error_code populate(std::uintptr_t, std::uintptr_t) noexcept override {
        populates.fetch_add(1);
        return {};
    }
};

// The base class's populate: not supported.
struct Plain : mirror::Notifier {
    bool invalidate(const mirror::Invalidation&, std::uint64_t) noexcept override { return true; }
};

}  // namespace

// ---- preferred_location = host ---------------------------------------------------------------

TEST_CASE("preferred_location=host keeps pages from chaos; a range without it moves", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 128, len = pages * kPage;
    ManagedPattern advised(*rt, len), control(*rt, len), read_mostly(*rt, len);
    advise_ok(*rt, advised.data(), len, Advice::set_preferred_location, {Target::host});
    advise_ok(*rt, read_mostly.data(), len, Advice::set_read_mostly);
    CHECK(count_bits(bits_of(*rt, advised.data(), len), advice_bits::prefer_host) == pages);
    // Every host page picked, every round; rounds only when asked.
    PolicyConfig chaos;
    chaos.kind = PolicyKind::chaos;
    chaos.chaos_fraction = 1.0;
    chaos.chaos_period_ms = 3600000;
    REQUIRE(!rt->set_policy(chaos));
    for (int i = 0; i < 3; ++i) (void)rt->policy_round();
    CHECK(count_state(*rt, control.data(), len, PageState::device) == pages);
    CHECK(count_state(*rt, advised.data(), len, PageState::host) == pages);
    CHECK(count_state(*rt, read_mostly.data(), len, PageState::host) == pages);
    // Unset: the next round takes them too.
    advise_ok(*rt, advised.data(), len, Advice::unset_preferred_location);
    CHECK(count_bits(bits_of(*rt, advised.data(), len), advice_bits::prefer_host) == 0);
    (void)rt->policy_round();
    CHECK(count_state(*rt, advised.data(), len, PageState::device) == pages);
    CHECK(first_mismatch(advised.data(), len) == len);
    CHECK(first_mismatch(control.data(), len) == len);
    CHECK(first_mismatch(read_mostly.data(), len) == len);
}

TEST_CASE("preferred_location=host keeps pages from tier; a range without it is demoted", "[runtime]") {
    // 64 KiB on the host at most: both ranges are far over it.
    auto rt = make_runtime("arena=memfd,arena_size=64M,policy=tier,tier_hot=64K");
    constexpr std::size_t pages = 256, len = pages * kPage;
    auto a = rt->allocate(len);
    auto c = rt->allocate(len);
    REQUIRE(a.ok());
    REQUIRE(c.ok());
    auto* advised = static_cast<std::byte*>(*a);
    auto* control = static_cast<std::byte*>(*c);
    advise_ok(*rt, advised, len, Advice::set_preferred_location, {Target::host});
    fill_pattern(advised, len);
    fill_pattern(control, len);
    // Rounds by hand too (the policy's thread runs its own every 50 ms);
    // pages leave their grace after two periods.
    const bool demoted = eventually([&] {
        (void)rt->policy_round();
        return count_state(*rt, control, len, PageState::device) >= pages - 16;
    });
    CHECK(demoted);
    (void)rt->policy_round();
    CHECK(count_state(*rt, advised, len, PageState::host) == pages);
    CHECK(first_mismatch(advised, len) == len);
    CHECK(first_mismatch(control, len) == len);
    REQUIRE(!rt->release(advised, len));
    REQUIRE(!rt->release(control, len));
}

// ---- preferred_location = device -------------------------------------------------------------

TEST_CASE("preferred_location=device: a CPU touch brings home that one page", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 64, len = pages * kPage;
    ManagedPattern advised(*rt, len), control(*rt, len);
    advise_ok(*rt, advised.data(), len, Advice::set_preferred_location, {Target::device});
    CHECK(count_bits(bits_of(*rt, advised.data(), len), advice_bits::prefer_device) == pages);
    migrate_ok(*rt, advised.data(), len, Target::device);
    migrate_ok(*rt, control.data(), len, Target::device);

    SECTION("one touch") {
        CHECK(first_mismatch(advised.page(10), kPage) == kPage);
        auto s = states(*rt, advised.data(), len);
        CHECK(s[10] == PageState::host);
        CHECK(count_state(s, PageState::device) == pages - 1);
    }
    SECTION("a walk in order: one page per touch, where the window grows without the advice") {
        constexpr std::size_t walked = 9;
        for (std::size_t i = 0; i < walked; ++i) {
            CHECK(first_mismatch(advised.page(i), kPage) == kPage);
            CHECK(first_mismatch(control.page(i), kPage) == kPage);
        }
        auto s = states(*rt, advised.data(), len);
        CHECK(count_state(s, PageState::host) == walked);
        for (std::size_t i = walked; i < pages; ++i) {
            INFO("page " << i);
            CHECK(s[i] == PageState::device);
        }
        // The control's window doubled along the walk: more came home.
        CHECK(count_state(*rt, control.data(), len, PageState::host) > walked);
    }
    CHECK(first_mismatch(advised.data(), len) == len);
    CHECK(first_mismatch(control.data(), len) == len);
}

TEST_CASE("preferred_location=device: a first touch fills that one page, not 64 KiB", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 64, len = pages * kPage;
    Mapping advised(len), control(len);
    REQUIRE(!rt->manage(advised.data(), len));
    REQUIRE(!rt->manage(control.data(), len));
    advise_ok(*rt, advised.data(), len, Advice::set_preferred_location, {Target::device});
    *reinterpret_cast<volatile std::uint8_t*>(advised.page(20)) = 1;
    *reinterpret_cast<volatile std::uint8_t*>(control.page(20)) = 1;
    auto s = states(*rt, advised.data(), len);
    CHECK(s[20] == PageState::host);
    CHECK(count_state(s, PageState::none) == pages - 1);
    CHECK(count_state(*rt, control.data(), len, PageState::host) >= 16);
}

TEST_CASE("preferred_location=device: tier sends pages a CPU touch brought home back next round", "[runtime]") {
    // A budget far above what is used: tier alone would keep everything home.
    auto rt = make_runtime("arena=memfd,arena_size=64M,policy=tier,tier_hot=256M");
    constexpr std::size_t pages = 32, len = pages * kPage;
    auto a = rt->allocate(len);
    auto c = rt->allocate(len);
    REQUIRE(a.ok());
    REQUIRE(c.ok());
    auto* advised = static_cast<std::byte*>(*a);
    auto* control = static_cast<std::byte*>(*c);
    fill_pattern(advised, len);
    fill_pattern(control, len);
    advise_ok(*rt, advised, len, Advice::set_preferred_location, {Target::device});
    migrate_ok(*rt, advised, len, Target::device);
    migrate_ok(*rt, control, len, Target::device);
    CHECK(first_mismatch(advised + 5 * kPage, kPage) == kPage);
    CHECK(first_mismatch(control + 5 * kPage, kPage) == kPage);
    REQUIRE(rt->state(advised + 5 * kPage).value() == PageState::host);
    REQUIRE(rt->state(control + 5 * kPage).value() == PageState::host);
    (void)rt->policy_round();
    CHECK(rt->state(advised + 5 * kPage).value() == PageState::device);
    CHECK(count_state(*rt, advised, len, PageState::device) == pages);
    // Without the advice it stays (well within tier_hot).
    CHECK(rt->state(control + 5 * kPage).value() == PageState::host);
    CHECK(first_mismatch(advised, len) == len);
    CHECK(first_mismatch(control, len) == len);
    REQUIRE(!rt->release(advised, len));
    REQUIRE(!rt->release(control, len));
}

// ---- accessed_by -----------------------------------------------------------------------------

TEST_CASE("accessed_by: the device maps the range at once and reads device pages where they are", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 32, len = pages * kPage;
    ManagedPattern m(*rt, len), control(*rt, len);
    auto dev = device_on(*rt, m.data(), len);
    auto cdev = device_on(*rt, control.data(), len);
    // Pages on the device for nobody in particular (owner nullptr).
    migrate_ok(*rt, m.data(), len, Target::device);
    migrate_ok(*rt, control.data(), len, Target::device);
    REQUIRE(dev->entries() == 0);

    advise_ok(*rt, m.data(), len, Advice::set_accessed_by, {Target::device, dev.get()});
    CHECK(count_bits(bits_of(*rt, m.data(), len), advice_bits::accessed_by) == pages);
    CHECK(dev->entries() == pages);
    std::vector<std::byte> buf(len);
    auto r = dev->read(m.data(), len, buf.data());
    REQUIRE(r.ok());
    CHECK(r->faults == 0);
    CHECK(first_mismatch_at(buf.data(), len, addr_of(m.data())) == len);
    CHECK(count_state(*rt, m.data(), len, PageState::device) == pages);

    // The control: the same read brings the pages home.
    auto cr = cdev->read(control.data(), len, buf.data());
    REQUIRE(cr.ok());
    CHECK(cr->faults >= 1);
    CHECK(first_mismatch_at(buf.data(), len, addr_of(control.data())) == len);
    CHECK(count_state(*rt, control.data(), len, PageState::host) == pages);

    // Home and back: the entries are made again after each move.
    migrate_ok(*rt, m.data(), len, Target::host);
    CHECK(dev->entries() == pages);
    migrate_ok(*rt, m.data(), len, Target::device);
    CHECK(dev->entries() == pages);
    r = dev->read(m.data(), len, buf.data());
    REQUIRE(r.ok());
    CHECK(r->faults == 0);
    CHECK(first_mismatch_at(buf.data(), len, addr_of(m.data())) == len);
    CHECK(count_state(*rt, m.data(), len, PageState::device) == pages);
    // Prefetch too.
    REQUIRE(rt->prefetch(m.data(), len, Target::host).ok());
    CHECK(dev->entries() == pages);
    REQUIRE(rt->prefetch(m.data(), len, Target::device).ok());
    CHECK(dev->entries() == pages);
    r = dev->read(m.data(), len, buf.data());
    REQUIRE(r.ok());
    CHECK(r->faults == 0);
    CHECK(count_state(*rt, m.data(), len, PageState::device) == pages);

    // Writes in place as well.
    std::vector<std::byte> in(len);
    fill_pattern_at(in.data(), addr_of(m.data()), len, 9);
    auto w = dev->write(m.data(), len, in.data());
    REQUIRE(w.ok());
    CHECK(count_state(*rt, m.data(), len, PageState::device) == pages);
    CHECK(first_mismatch_salted(m.data(), len, 9) == len);
}

TEST_CASE("accessed_by on host pages: entries without a fault; unset_accessed_by ends it", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 16, len = pages * kPage;
    ManagedPattern m(*rt, len);
    auto dev = device_on(*rt, m.data(), len);
    advise_ok(*rt, m.data(), len, Advice::set_accessed_by, {Target::device, dev.get()});
    CHECK(dev->entries() == pages);
    std::vector<std::byte> buf(len);
    auto r = dev->read(m.data(), len, buf.data());
    REQUIRE(r.ok());
    CHECK(r->faults == 0);
    CHECK(first_mismatch_at(buf.data(), len, addr_of(m.data())) == len);

    // Half of it unset: those pages lose the bit, the rest keep it.
    advise_ok(*rt, m.data(), len / 2, Advice::unset_accessed_by, {Target::device, dev.get()});
    auto b = bits_of(*rt, m.data(), len);
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        CHECK(static_cast<bool>(b[i] & advice_bits::accessed_by) == (i >= pages / 2));
    }
    // A migration: only the advised half is mapped again.
    migrate_ok(*rt, m.data(), len, Target::device);
    CHECK(dev->entries() == pages / 2);
    // A read of the unadvised half brings it home (the pages are nobody's).
    r = dev->read(m.data(), len / 2, buf.data());
    REQUIRE(r.ok());
    CHECK(r->faults >= 1);
    CHECK(count_state(*rt, m.data(), len / 2, PageState::host) == pages / 2);
    // The advised half is read in place.
    r = dev->read(m.data() + len / 2, len / 2, buf.data());
    REQUIRE(r.ok());
    CHECK(count_state(*rt, m.data() + len / 2, len / 2, PageState::device) == pages / 2);

    advise_ok(*rt, m.data(), len, Advice::unset_accessed_by, {Target::device, dev.get()});
    CHECK(count_bits(bits_of(*rt, m.data(), len), advice_bits::accessed_by) == 0);
    migrate_ok(*rt, m.data(), len, Target::host);
    migrate_ok(*rt, m.data(), len, Target::device);
    CHECK(dev->entries() == 0);
    CHECK(first_mismatch(m.data(), len) == len);
}

TEST_CASE("accessed_by: pages prefetch fills on the host are mapped at once too", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 16, len = pages * kPage;
    Mapping m(len);
    REQUIRE(!rt->manage(m.data(), len));
    auto dev = device_on(*rt, m.data(), len);
    advise_ok(*rt, m.data(), len, Advice::set_accessed_by, {Target::device, dev.get()});
    CHECK(dev->entries() == 0);   // nothing there yet
    auto p = rt->prefetch(m.data(), len, Target::host);
    REQUIRE(p.ok());
    CHECK(count_state(*rt, m.data(), len, PageState::host) == pages);
    CHECK(dev->entries() == pages);
    std::vector<std::byte> buf(len, std::byte{1});
    auto r = dev->read(m.data(), len, buf.data());
    REQUIRE(r.ok());
    CHECK(r->faults == 0);
    CHECK(first_nonzero(buf.data(), len) == len);
}

TEST_CASE("accessed_by given again: the device maps the pages once per migration", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 8, len = pages * kPage;
    ManagedPattern m(*rt, len);
    Counting dev;
    REQUIRE(!rt->notifiers().insert(dev, addr_of(m.data()), len));
    for (int i = 0; i < 3; ++i) advise_ok(*rt, m.data(), len, Advice::set_accessed_by, {Target::device, &dev});
    advise_ok(*rt, m.page(2), 2 * kPage, Advice::set_accessed_by, {Target::device, &dev});
    const int before = dev.populates.load();
    migrate_ok(*rt, m.data(), len, Target::device);
    CHECK(dev.populates.load() - before >= 1);
    CHECK(dev.populates.load() - before <= 3);   // at most one per disjoint interval: [0,2) [2,4) [4,8)
    // One unset ends it, however often it was given.
    advise_ok(*rt, m.data(), len, Advice::unset_accessed_by, {Target::device, &dev});
    CHECK(count_bits(bits_of(*rt, m.data(), len), advice_bits::accessed_by) == 0);
    const int after_unset = dev.populates.load();
    migrate_ok(*rt, m.data(), len, Target::host);
    CHECK(dev.populates.load() == after_unset);
    rt->notifiers().remove(dev);
}

TEST_CASE("accessed_by ends with the memory: new memory at the same address is not read in place", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 8, len = pages * kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    REQUIRE(!rt->manage(m.data(), len));
    auto dev = device_on(*rt, m.data(), len);
    advise_ok(*rt, m.data(), len, Advice::set_accessed_by, {Target::device, dev.get()});
    // The memory goes and new memory comes in its place.
    void* again = ::mmap(m.data(), len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    REQUIRE(again == m.data());
    REQUIRE(eventually([&] { return !rt->manages(m.data(), len); }));
    REQUIRE(!rt->manage(m.data(), len));
    fill_salted(m.data(), len, 3);
    CHECK(count_bits(bits_of(*rt, m.data(), len), advice_bits::accessed_by) == 0);
    migrate_ok(*rt, m.data(), len, Target::device);
    std::vector<std::byte> buf(len);
    auto r = dev->read(m.data(), len, buf.data());
    REQUIRE(r.ok());
    CHECK(first_mismatch_at(buf.data(), len, addr_of(m.data()), 3) == len);
    // Nobody's device pages: the read brought them home.
    CHECK(count_state(*rt, m.data(), len, PageState::host) == pages);
}

TEST_CASE("accessed_by: two devices, one unset, the other keeps the pages advised", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 8, len = pages * kPage;
    ManagedPattern m(*rt, len);
    auto d1 = device_on(*rt, m.data(), len);
    auto d2 = device_on(*rt, m.data(), len);
    advise_ok(*rt, m.data(), len, Advice::set_accessed_by, {Target::device, d1.get()});
    advise_ok(*rt, m.data(), len, Advice::set_accessed_by, {Target::device, d2.get()});
    advise_ok(*rt, m.data(), len, Advice::unset_accessed_by, {Target::device, d1.get()});
    CHECK(count_bits(bits_of(*rt, m.data(), len), advice_bits::accessed_by) == pages);
    migrate_ok(*rt, m.data(), len, Target::device);
    CHECK(d2->entries() == pages);
    CHECK(d1->entries() == 0);
}

TEST_CASE("accessed_by: a device that cannot map on advice is refused and nothing changes", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 8, len = pages * kPage;
    ManagedPattern m(*rt, len);
    Plain plain;
    REQUIRE(!rt->notifiers().insert(plain, addr_of(m.data()), len));
    std::string why;
    auto ec = rt->advise(m.data(), len, Advice::set_accessed_by, {Target::device, &plain}, &why);
    CHECK(ec);
    CHECK(!why.empty());
    CHECK(count_bits(bits_of(*rt, m.data(), len), advice_bits::accessed_by) == 0);

    // One that could before and cannot now keeps its earlier advice.
    Flaky flaky;
    REQUIRE(!rt->notifiers().insert(flaky, addr_of(m.data()), len));
    advise_ok(*rt, m.data(), len / 2, Advice::set_accessed_by, {Target::device, &flaky});
    flaky.fail = true;
    why.clear();
    ec = rt->advise(m.data(), len, Advice::set_accessed_by, {Target::device, &flaky}, &why);
    CHECK(ec);
    CHECK(!why.empty());
    auto b = bits_of(*rt, m.data(), len);
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        CHECK(static_cast<bool>(b[i] & advice_bits::accessed_by) == (i < pages / 2));
    }
    rt->notifiers().remove(plain);
    rt->notifiers().remove(flaky);
}

// ---- read_mostly -----------------------------------------------------------------------------

TEST_CASE("read_mostly: a device read makes replicas, the pages stay home, a CPU write drops one", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 16, len = pages * kPage;
    ManagedPattern m(*rt, len);
    auto dev = device_on(*rt, m.data(), len);
    advise_ok(*rt, m.data(), len, Advice::set_read_mostly);
    CHECK(count_bits(bits_of(*rt, m.data(), len), advice_bits::read_mostly) == pages);
    CHECK(count_bits(bits_of(*rt, m.data(), len), advice_bits::replicated) == 0);
    const auto st0 = rt->stats();

    std::vector<std::byte> buf(len);
    auto r = dev->read(m.data(), len, buf.data());
    REQUIRE(r.ok());
    CHECK(first_mismatch_at(buf.data(), len, addr_of(m.data())) == len);
    CHECK(count_state(*rt, m.data(), len, PageState::host) == pages);
    CHECK(count_bits(bits_of(*rt, m.data(), len), advice_bits::replicated) == pages);
    auto st = rt->stats();
    CHECK(st.replicas == pages);
    CHECK(st.replicas_made == st0.replicas_made + pages);
    CHECK(st.device_pages >= pages);
    // The device reads its replicas: no further fault.
    r = dev->read(m.data(), len, buf.data());
    REQUIRE(r.ok());
    CHECK(r->faults == 0);
    // The CPU reads freely: no fault, no replica lost.
    const auto faults = rt->stats().faults;
    CHECK(first_mismatch(m.data(), len) == len);
    CHECK(rt->stats().faults == faults);
    CHECK(rt->stats().replicas == pages);

    // A CPU write to page 3: its replica goes, before the write completes.
    std::uint64_t v = 0xC0FFEE;
    std::memcpy(m.page(3) + 64, &v, sizeof v);
    st = rt->stats();
    CHECK(st.replica_invalidations == st0.replica_invalidations + 1);
    CHECK(st.replicas == pages - 1);
    auto b = bits_of(*rt, m.data(), len);
    CHECK(!(b[3] & advice_bits::replicated));
    CHECK((b[3] & advice_bits::read_mostly));
    CHECK(count_bits(b, advice_bits::replicated) == pages - 1);
    // A second write to the same page: nothing left to drop, no fault.
    const auto inval = rt->stats().replica_invalidations;
    v = 0xBEEF;
    std::memcpy(m.page(3) + 72, &v, sizeof v);
    CHECK(rt->stats().replica_invalidations == inval);
    // The device sees the new data (and makes the replica again).
    r = dev->read(m.page(3), kPage, buf.data());
    REQUIRE(r.ok());
    CHECK(word(buf.data() + 64) == 0xC0FFEE);
    CHECK(word(buf.data() + 72) == 0xBEEF);
    CHECK(first_mismatch_at(buf.data(), 64, addr_of(m.page(3))) == 64);
    CHECK(eventually([&] { return rt->stats().replicas == pages; }));
    CHECK(rt->state(m.page(3)).value() == PageState::host);
}

TEST_CASE("read_mostly: prefetch to the device replicates instead of moving", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 32, len = pages * kPage;
    ManagedPattern m(*rt, len);
    advise_ok(*rt, m.data(), len / 2, Advice::set_read_mostly);
    auto p = rt->prefetch(m.data(), len, Target::device);
    REQUIRE(p.ok());
    CHECK(p->requested == pages);
    CHECK(p->migrated == pages);
    auto s = states(*rt, m.data(), len);
    auto b = bits_of(*rt, m.data(), len);
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        if (i < pages / 2) {
            CHECK(s[i] == PageState::host);
            CHECK((b[i] & advice_bits::replicated));
        } else {
            CHECK(s[i] == PageState::device);
            CHECK(!(b[i] & advice_bits::replicated));
        }
    }
    CHECK(rt->stats().replicas == pages / 2);
    // A device then reads the replicas without faulting a page home.
    auto dev = device_on(*rt, m.data(), len / 2);
    std::vector<std::byte> buf(len / 2);
    auto r = dev->read(m.data(), len / 2, buf.data());
    REQUIRE(r.ok());
    CHECK(first_mismatch_at(buf.data(), len / 2, addr_of(m.data())) == len / 2);
    CHECK(rt->stats().replicas == pages / 2);
    CHECK(rt->stats().replicas_made == pages / 2);
    CHECK(first_mismatch(m.data(), len) == len);
}

TEST_CASE("read_mostly: unset drops the replicas; never-touched pages get none", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 16, len = pages * kPage;
    ManagedPattern m(*rt, len);
    auto dev = device_on(*rt, m.data(), len);
    advise_ok(*rt, m.data(), len, Advice::set_read_mostly);
    std::vector<std::byte> buf(len);
    REQUIRE(dev->read(m.data(), len, buf.data()).ok());
    REQUIRE(rt->stats().replicas == pages);
    const auto used = rt->stats().device_pages;

    advise_ok(*rt, m.data(), len, Advice::unset_read_mostly);
    auto b = bits_of(*rt, m.data(), len);
    CHECK(count_bits(b, advice_bits::replicated) == 0);
    CHECK(count_bits(b, advice_bits::read_mostly) == 0);
    CHECK(rt->stats().replicas == 0);
    // The device let go of its references too: the pages are free.
    CHECK(eventually([&] { return rt->stats().device_pages <= used - pages; }));
    // A write now drops nothing; the device reads the new data from the host.
    const auto inval = rt->stats().replica_invalidations;
    std::uint64_t v = 77;
    std::memcpy(m.page(5), &v, sizeof v);
    CHECK(rt->stats().replica_invalidations == inval);
    auto r = dev->read(m.page(5), kPage, buf.data());
    REQUIRE(r.ok());
    CHECK(word(buf.data()) == 77);
    CHECK(rt->stats().replicas == 0);

    // Never touched: zero everywhere, nothing to replicate.
    Mapping fresh(len);
    REQUIRE(!rt->manage(fresh.data(), len));
    advise_ok(*rt, fresh.data(), len, Advice::set_read_mostly);
    auto p = rt->prefetch(fresh.data(), len, Target::device);
    REQUIRE(p.ok());
    CHECK(p->migrated == 0);
    CHECK(p->already_there == pages);
    CHECK(count_state(*rt, fresh.data(), len, PageState::none) == pages);
    CHECK(rt->stats().replicas == 0);
}

TEST_CASE("advice follows pages that mremap moves", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 8, len = pages * kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    REQUIRE(!rt->manage(m.data(), len));
    advise_ok(*rt, m.data(), len, Advice::set_read_mostly);
    advise_ok(*rt, m.data(), len / 2, Advice::set_preferred_location, {Target::host});
    Mapping dst(len);
    REQUIRE(dst);
    const std::uintptr_t from = addr_of(m.data());
    void* moved = ::mremap(m.data(), len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst.data());
    REQUIRE(moved == dst.data());
    m.forget();
    REQUIRE(eventually([&] { return rt->manages(dst.data(), len); }));
    std::vector<std::uint8_t> b(pages);
    REQUIRE(eventually([&] { return !rt->advice(dst.data(), len, b) && (b[0] & advice_bits::read_mostly); }));
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        CHECK((b[i] & advice_bits::read_mostly));
        CHECK(static_cast<bool>(b[i] & advice_bits::prefer_host) == (i < pages / 2));
    }
    CHECK(first_mismatch_at(dst.data(), len, from) == len);
}

// ---- errors ----------------------------------------------------------------------------------

TEST_CASE("advise errors: EINVAL and EFAULT with a reason, nothing changed", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 8, len = pages * kPage;
    Mapping both(2 * len);
    REQUIRE(both);
    fill_pattern(both.data(), 2 * len);
    REQUIRE(!rt->manage(both.data(), len));
    std::byte* p = both.data();
    auto dev = device_on(*rt, p, len / 2);   // covers half the range
    Plain outside;                           // never inserted

    auto refused = [&](Advice a, AdviceTarget t, std::errc e, const void* at = nullptr, std::size_t n = 0) {
        std::string why;
        const auto before = bits_of(*rt, p, len);
        const auto ec = rt->advise(at ? at : p, at ? n : len, a, t, &why);
        INFO("advice " << static_cast<int>(a) << ": " << ec.message() << ": " << why);
        CHECK(ec == e);
        CHECK(!why.empty());
        CHECK(bits_of(*rt, p, len) == before);
    };
    refused(static_cast<Advice>(99), {}, std::errc::invalid_argument);
    refused(Advice::set_preferred_location, {static_cast<Target>(9)}, std::errc::invalid_argument);
    refused(Advice::set_accessed_by, {Target::device, nullptr}, std::errc::invalid_argument);
    refused(Advice::unset_accessed_by, {Target::device, nullptr}, std::errc::invalid_argument);
    refused(Advice::set_accessed_by, {Target::device, dev.get()}, std::errc::invalid_argument);
    refused(Advice::set_accessed_by, {Target::device, &outside}, std::errc::invalid_argument);
    refused(Advice::set_read_mostly, {}, std::errc::invalid_argument, p, 0);
    refused(Advice::set_read_mostly, {}, std::errc::invalid_argument, p + 10,
            std::numeric_limits<std::size_t>::max() - 5);
    refused(Advice::set_read_mostly, {}, std::errc::bad_address, p + len, kPage);
    // Partly managed: nothing changes on the managed part either.
    refused(Advice::set_read_mostly, {}, std::errc::bad_address, p + len - kPage, 2 * kPage);
    refused(Advice::set_preferred_location, {Target::host}, std::errc::bad_address, p + len - kPage, 2 * kPage);

    SECTION("read_mostly, then preferred_location=device") {
        advise_ok(*rt, p, len / 2, Advice::set_read_mostly);
        // Any overlap is refused, and the pages that had no read_mostly keep none of it.
        refused(Advice::set_preferred_location, {Target::device}, std::errc::invalid_argument);
        auto b = bits_of(*rt, p, len);
        CHECK(count_bits(b, advice_bits::prefer_device) == 0);
        CHECK(count_bits(b, advice_bits::read_mostly) == pages / 2);
        // preferred host is fine with it.
        advise_ok(*rt, p, len, Advice::set_preferred_location, {Target::host});
    }
    SECTION("preferred_location=device, then read_mostly") {
        advise_ok(*rt, p + len / 2, len / 2, Advice::set_preferred_location, {Target::device});
        refused(Advice::set_read_mostly, {}, std::errc::invalid_argument);
        auto b = bits_of(*rt, p, len);
        CHECK(count_bits(b, advice_bits::read_mostly) == 0);
        CHECK(count_bits(b, advice_bits::prefer_device) == pages / 2);
        // Once unset, it may be read-mostly.
        advise_ok(*rt, p, len, Advice::unset_preferred_location);
        advise_ok(*rt, p, len, Advice::set_read_mostly);
    }
    SECTION("advice() refuses too") {
        std::vector<std::uint8_t> out(pages);
        CHECK(rt->advice(p + len - kPage, 2 * kPage, out) == std::errc::bad_address);
        std::vector<std::uint8_t> short_out(pages - 1);
        CHECK(rt->advice(p, len, short_out) == std::errc::invalid_argument);
    }
    CHECK(first_mismatch(both.data(), 2 * len) == 2 * len);
}

TEST_CASE("advice on unaligned bytes covers the pages that hold them", "[runtime]") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 8, len = pages * kPage;
    ManagedPattern m(*rt, len);
    advise_ok(*rt, m.page(2) + 4000, 200, Advice::set_preferred_location, {Target::host});
    auto b = bits_of(*rt, m.data(), len);
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        CHECK(static_cast<bool>(b[i] & advice_bits::prefer_host) == (i == 2 || i == 3));
    }
}
