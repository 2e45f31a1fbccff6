// mirror::range_map / range_unmap: fault and map a range in a device in one
// call, device pages held while mapped, a failed map undone, and mappings
// kept right while another thread migrates and drops pages (real threads).
#include <catch2/catch.hpp>

#include <uhmm/mirror.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;
namespace pfn = uhmm::mirror::pfn;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

// A device page table: one word per page, 0 when unmapped. Its notifier
// drops entries on every invalidation.
struct Table : mirror::DeviceMapper, mirror::Notifier {
    Runtime& rt;
    std::mutex lock;
    std::vector<std::uint64_t> words;
    std::size_t fail_at = ~std::size_t{0};   // map_page of this index fails (EIO)
    std::size_t maps = 0, unmaps = 0;
    std::uintptr_t base = 0;
    std::atomic<std::size_t> invalidations{0};

    Table(Runtime& r, std::size_t pages) : rt(r), words(pages, 0) {}
    std::error_code map_page(std::size_t i, std::uint64_t w) override {
        if (i == fail_at) return std::make_error_code(std::errc::io_error);
        words[i] = w;
        ++maps;
        return {};
    }
    void unmap_page(std::size_t i, std::uint64_t) noexcept override {
        words[i] = 0;
        ++unmaps;
    }
    bool invalidate(const mirror::Invalidation& inv, std::uint64_t) noexcept override {
        std::lock_guard g(lock);
        // Entries only: range_unmap drops range_map's page references.
        for (std::uintptr_t a = std::max(inv.start, start()); a < std::min(inv.end, end()); a += kPage)
            words[(a - base) / kPage] = 0;
        invalidations.fetch_add(1);
        return true;
    }
    std::size_t mapped() {
        std::lock_guard g(lock);
        std::size_t n = 0;
        for (auto w : words) n += w != 0;
        return n;
    }
};

// Allocated memory holding the fill pattern, and a device table watching it.
struct Setup {
    std::unique_ptr<Runtime> rt;
    std::size_t pages, len;
    std::byte* p = nullptr;
    std::unique_ptr<Table> t;
    std::vector<std::uint64_t> pfns;
    Setup(const std::string& conf, std::size_t n) : rt(make_runtime(conf)), pages(n), len(n * kPage), pfns(n) {
        auto a = rt->allocate(len);
        REQUIRE(a.ok());
        p = static_cast<std::byte*>(*a);
        fill_pattern(p, len);
        t = std::make_unique<Table>(*rt, pages);
        t->base = addr_of(p);
        REQUIRE(!rt->notifiers().insert(*t, addr_of(p), len));
    }
    ~Setup() { rt->notifiers().remove(*t); }
    // The whole range, for this device, with `flags` requested.
    mirror::Range range(std::uint64_t flags) {
        mirror::Range r;
        r.notifier = t.get();
        r.start = addr_of(p);
        r.end = addr_of(p) + len;
        r.pfns = pfns.data();
        r.default_flags = flags;
        r.dev_private_owner = t.get();
        return r;
    }
};

}  // namespace

TEST_CASE("range_map maps host and device pages in one call; device pages are held until unmapped") {
    Setup s(kMemfdConf, 32);
    auto& rt = s.rt;
    auto& t = *s.t;
    const std::size_t pages = s.pages, len = s.len;
    REQUIRE(rt->migrate(s.p, len / 2, Target::device, &t).ok());   // the first half on the device

    auto r = s.range(pfn::req_fault | pfn::req_write);
    REQUIRE(!mirror::range_map(*rt, r, t, t.lock));
    CHECK(t.mapped() == pages);
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        CHECK(static_cast<bool>(t.words[i] & pfn::device) == (i < pages / 2));
        CHECK(t.words[i] & pfn::write);
    }
    CHECK(rt->stats().arena.used_pages == pages / 2);
    mirror::range_unmap(*rt, r, t, t.lock);
    CHECK(t.mapped() == 0);
    CHECK(rt->stats().arena.used_pages == pages / 2);   // still on the device, now only the runtime's
    REQUIRE(rt->migrate(s.p, len, Target::host).ok());
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));
    CHECK(first_mismatch(s.p, len) == len);
}

TEST_CASE("a failed map_page undoes everything range_map mapped") {
    Setup s(kMemfdConf, 16);
    auto& rt = s.rt;
    auto& t = *s.t;
    REQUIRE(rt->migrate(s.p, s.len, Target::device, &t).ok());
    t.fail_at = 9;
    auto r = s.range(pfn::req_fault);
    CHECK(mirror::range_map(*rt, r, t, t.lock) == std::errc::io_error);
    CHECK(t.mapped() == 0);
    CHECK(t.maps == 9);
    CHECK(t.unmaps == 9);
    // No reference left behind: once home, the arena is empty.
    REQUIRE(rt->migrate(s.p, s.len, Target::host).ok());
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));
    mirror::Range none;
    CHECK(mirror::range_map(*rt, none, t, t.lock) == std::errc::invalid_argument);   // no notifier
}

TEST_CASE("range_map under concurrent migrations and drops: every mapping it leaves is current",
          "[concurrency]") {
    Setup s("arena=memfd,arena_size=64M,fault_threads=2", 64);
    auto& rt = s.rt;
    auto& t = *s.t;
    auto* p = s.p;
    const std::size_t pages = s.pages, len = s.len;
    std::atomic<bool> stop{false};
    std::thread mover([&] {
        std::mt19937_64 rng(5);
        while (!stop.load()) {
            const std::size_t first = rng() % pages, n = 1 + rng() % std::min<std::size_t>(8, pages - first);
            (void)rt->migrate(p + first * kPage, n * kPage, rng() % 2 ? Target::device : Target::host,
                              rng() % 2 ? static_cast<const void*>(&t) : nullptr);
        }
    });
    std::size_t errors = 0, busy = 0, mapped_rounds = 0, stale = 0;
    for (int round = 0; round < static_cast<int>(scaled(300)); ++round) {
        auto r = s.range(pfn::req_fault);
        if (auto ec = mirror::range_map(*rt, r, t, t.lock)) {
            // EBUSY is the documented answer when invalidations keep racing
            // it for a second (the mover never stops here); nothing else is.
            if (ec == std::errc::device_or_resource_busy) ++busy;
            else ++errors;
            continue;
        }
        ++mapped_rounds;
        {
            // Under the device lock, each mapped device page must still be
            // ours and on the device (an invalidation would have dropped it).
            std::lock_guard g(t.lock);
            for (std::size_t i = 0; i < pages; ++i) {
                const auto w = t.words[i];
                if (!(w & pfn::device)) continue;
                auto s = rt->state(p + i * kPage);
                stale += !s.ok() || *s != PageState::device;
            }
        }
        mirror::range_unmap(*rt, r, t, t.lock);
    }
    stop = true;
    mover.join();
    INFO("rounds mapped " << mapped_rounds << ", EBUSY " << busy);
    CHECK(errors == 0);
    CHECK(mapped_rounds > scaled(300) / 2);
    CHECK(stale == 0);
    CHECK(first_mismatch(p, len) == len);
    REQUIRE(rt->migrate(p, len, Target::host).ok());
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));
}

TEST_CASE("a migration's invalidation lasts until its pages have moved: a device looking them up waits for it",
          "[concurrency]") {
    // 32 MiB: moving them home takes milliseconds after the callback ran.
    Setup s("arena=memfd,arena_size=64M", 8192);
    auto& rt = s.rt;
    auto& t = *s.t;
    REQUIRE(rt->migrate(s.p, s.len, Target::device, &t).ok());
    const std::size_t before = t.invalidations.load();
    const std::uint64_t seq = t.read_begin();
    std::thread mover([&] { CHECK(rt->migrate(s.p, s.len, Target::host).ok()); });
    while (t.invalidations.load() == before) std::this_thread::yield();
    // The callback ran; the pages may still be moving. A device that looks
    // now must not see them where they were.
    CHECK(t.read_retry(seq));
    (void)t.read_begin();
    std::size_t still_device = 0;
    for (std::size_t i = 0; i < s.pages; ++i) {
        auto st = rt->state(s.p + i * kPage);
        still_device += !st.ok() || *st != PageState::host;
    }
    mover.join();
    CHECK(still_device == 0);
    CHECK(first_mismatch(s.p, s.len) == s.len);
}

TEST_CASE("device copies by address: they reach the page while it is there, ESTALE once a CPU fault took it home") {
    auto rt = make_runtime();
    constexpr std::size_t len = 4 * kPage;
    ManagedPattern m(*rt, len);
    const std::error_condition kStale(ESTALE, std::generic_category());
    int me = 0;   // the device: its address is its owner tag
    REQUIRE(rt->migrate(m.data(), len, Target::device, &me).ok());
    std::vector<std::uint64_t> pfns(len / kPage);
    mirror::Range r;
    r.start = addr_of(m.data());
    r.end = r.start + len;
    r.pfns = pfns.data();
    r.dev_private_owner = &me;
    REQUIRE(!mirror::range_fault(*rt, r));
    REQUIRE((pfns[1] & pfn::device));
    const std::uint64_t page = pfns[1] & pfn::location_mask;

    std::vector<std::byte> in(kPage, std::byte{0x5a}), out(kPage);
    REQUIRE(!rt->device_page_write(m.page(1), page, 0, in.data(), kPage));
    REQUIRE(!rt->device_page_read(m.page(1), page, 0, out.data(), kPage));
    CHECK(out == in);
    // The wrong address for that page: refused, nothing written.
    CHECK(rt->device_page_write(m.page(2), page, 0, in.data(), kPage) == kStale);
    // The CPU touches it: home it comes, with the device's write.
    CHECK(std::memcmp(m.page(1), in.data(), kPage) == 0);
    // The device's entry is stale now (its invalidation may not have arrived
    // yet): a copy through it is refused, not lost in a dead page.
    std::vector<std::byte> late(kPage, std::byte{0x77});
    CHECK(rt->device_page_write(m.page(1), page, 0, late.data(), kPage) == kStale);
    CHECK(rt->device_page_read(m.page(1), page, 0, out.data(), kPage) == kStale);
    CHECK(std::memcmp(m.page(1), in.data(), kPage) == 0);
    CHECK(first_mismatch(m.page(2), 2 * kPage) == 2 * kPage);
}
