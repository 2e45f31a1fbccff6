// mirror::range_fault: the kernel's hmm_range_fault model in user space —
// snapshots that fault nothing, read and write faults, per-page requests,
// holes, PROT_NONE and read-only mappings, copy-on-write after fork, device
// pages of the asking device and of another, and EBUSY after a racing
// invalidation. Real memory, a real runtime.
#include <catch2/catch.hpp>

#include <uhmm/mirror.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime_fixture.hpp"
#include "held_child.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;
namespace pfn = uhmm::mirror::pfn;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

mirror::Range range_of(const void* p, std::size_t len, std::vector<std::uint64_t>& pfns, std::uint64_t flags = 0) {
    pfns.assign(len / kPage, 0);
    mirror::Range r;
    r.start = addr_of(p);
    r.end = addr_of(p) + len;
    r.pfns = pfns.data();
    r.default_flags = flags;
    return r;
}

std::size_t count(const std::vector<std::uint64_t>& pfns, std::uint64_t all_of, std::uint64_t none_of = 0) {
    std::size_t n = 0;
    for (auto v : pfns) n += (v & all_of) == all_of && !(v & none_of);
    return n;
}

}  // namespace

TEST_CASE("a snapshot faults nothing: touched pages valid and writable, the rest absent") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 16, len = pages * kPage;
    Mapping m(len);
    REQUIRE(m);
    for (std::size_t i = 0; i < pages; i += 2) m.page(i)[0] = std::byte{1};
    std::vector<std::uint64_t> pfns;
    auto r = range_of(m.data(), len, pfns);
    REQUIRE(!mirror::range_fault(*rt, r));
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        if (i % 2 == 0) {
            CHECK((pfns[i] & pfn::flags_mask) == (pfn::valid | pfn::write));
            CHECK((pfns[i] & pfn::location_mask) == addr_of(m.page(i)) / kPage);
        } else {
            CHECK(pfns[i] == 0);
        }
    }
    CHECK(cpu_mapped_pages(m.data(), len) == static_cast<long>(pages / 2));   // nothing faulted
}

TEST_CASE("read faults map the untouched pages; write faults make every page writable") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 16, len = pages * kPage;
    Mapping m(len);
    REQUIRE(m);
    m.page(3)[5] = std::byte{42};
    std::vector<std::uint64_t> pfns;
    auto r = range_of(m.data(), len, pfns, pfn::req_fault);
    REQUIRE(!mirror::range_fault(*rt, r));
    CHECK(count(pfns, pfn::valid) == pages);
    CHECK(pfns[3] & pfn::write);   // the written one
    // The untouched ones: the shared zero page (not writable) where the
    // kernel maps it for a read fault; a page of their own (writable) where
    // it does not, as on this project's PVM guests.
    CHECK(cpu_mapped_pages(m.data(), len) == static_cast<long>(pages));

    r = range_of(m.data(), len, pfns, pfn::req_fault | pfn::req_write);
    REQUIRE(!mirror::range_fault(*rt, r));
    CHECK(count(pfns, pfn::valid | pfn::write) == pages);
    CHECK(m.page(3)[5] == std::byte{42});
    CHECK(first_nonzero(m.page(4), 12 * kPage) == 12 * kPage);
}

TEST_CASE("per-page requests through pfn_flags_mask: only the pages asked for are faulted") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 8, len = pages * kPage;
    Mapping m(len);
    REQUIRE(m);
    std::vector<std::uint64_t> pfns;
    auto r = range_of(m.data(), len, pfns);
    r.pfn_flags_mask = pfn::req_fault | pfn::req_write;
    for (std::size_t i = 0; i < pages; i += 3) pfns[i] = pfn::req_fault | pfn::req_write;
    REQUIRE(!mirror::range_fault(*rt, r));
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        CHECK(static_cast<bool>(pfns[i] & pfn::valid) == (i % 3 == 0));
        CHECK(static_cast<bool>(pfns[i] & pfn::write) == (i % 3 == 0));
    }
    CHECK(cpu_mapped_pages(m.data(), len) == 3);
}

TEST_CASE("holes, PROT_NONE and read-only mappings: EFAULT, error flags and EPERM as the kernel says") {
    auto rt = make_runtime();
    constexpr std::size_t len = 8 * kPage;
    Mapping m(len);
    REQUIRE(m);
    std::memset(m.data(), 7, len);
    std::vector<std::uint64_t> pfns;

    SECTION("a hole") {
        REQUIRE(::munmap(m.page(2), kPage) == 0);
        auto snap = range_of(m.data(), len, pfns);
        REQUIRE(!mirror::range_fault(*rt, snap));
        CHECK(pfns[2] == 0);
        CHECK(pfns[1] & pfn::valid);
        auto r = range_of(m.data(), len, pfns, pfn::req_fault);
        CHECK(mirror::range_fault(*rt, r) == std::errc::bad_address);
    }
    SECTION("PROT_NONE") {
        REQUIRE(::mprotect(m.page(4), 2 * kPage, PROT_NONE) == 0);
        auto snap = range_of(m.data(), len, pfns);
        REQUIRE(!mirror::range_fault(*rt, snap));
        CHECK(pfns[4] == pfn::error);
        CHECK(pfns[5] == pfn::error);
        CHECK(pfns[6] & pfn::valid);
        auto r = range_of(m.data(), len, pfns, pfn::req_fault);
        CHECK(mirror::range_fault(*rt, r) == std::errc::bad_address);
    }
    SECTION("read-only") {
        REQUIRE(::mprotect(m.data(), len, PROT_READ) == 0);
        auto w = range_of(m.data(), len, pfns, pfn::req_fault | pfn::req_write);
        CHECK(mirror::range_fault(*rt, w) == std::errc::operation_not_permitted);
        auto r = range_of(m.data(), len, pfns, pfn::req_fault);
        REQUIRE(!mirror::range_fault(*rt, r));
        CHECK(count(pfns, pfn::valid, pfn::write) == len / kPage);
    }
    mirror::Range bad;
    bad.start = addr_of(m.data()) + 1;
    bad.end = addr_of(m.data()) + kPage;
    bad.pfns = pfns.data();
    CHECK(mirror::range_fault(*rt, bad) == std::errc::invalid_argument);
}

TEST_CASE("device pages: the asking device sees them where they are; another device faults them home") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 32, len = pages * kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    int dev = 0, other = 0;
    REQUIRE(rt->migrate(p, len, Target::device, &dev).ok());
    REQUIRE(count_state(*rt, p, len, PageState::device) == pages);

    std::vector<std::uint64_t> pfns;
    auto mine = range_of(p, len, pfns, pfn::req_fault);
    mine.dev_private_owner = &dev;
    REQUIRE(!mirror::range_fault(*rt, mine));
    CHECK(count(pfns, pfn::valid | pfn::device | pfn::write) == pages);
    std::vector<std::uint64_t> where;
    for (auto v : pfns) where.push_back(v & pfn::location_mask);
    std::sort(where.begin(), where.end());
    CHECK(std::unique(where.begin(), where.end()) == where.end());   // distinct device pages
    CHECK(count_state(*rt, p, len, PageState::device) == pages);     // nothing moved

    auto theirs_snapshot = range_of(p, len, pfns);
    theirs_snapshot.dev_private_owner = &other;
    REQUIRE(!mirror::range_fault(*rt, theirs_snapshot));
    CHECK(count(pfns, pfn::valid) == 0);   // not its pages, and it asked for no fault
    CHECK(count_state(*rt, p, len, PageState::device) == pages);

    auto theirs = range_of(p, len, pfns, pfn::req_fault);
    theirs.dev_private_owner = &other;
    REQUIRE(!mirror::range_fault(*rt, theirs));
    CHECK(count(pfns, pfn::valid, pfn::device) == pages);
    CHECK(count_state(*rt, p, len, PageState::host) == pages);   // brought home by the CPU faults
    CHECK(first_mismatch(p, len) == len);
}

TEST_CASE("after fork the parent's pages are copy-on-write: valid, not writable, until a write fault") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 8, len = pages * kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    // The child's copy never changes, whatever the parent does.
    HeldChild child([&] { return first_mismatch(m.data(), len) == len; });
    REQUIRE(child.started());
    std::vector<std::uint64_t> pfns;
    auto snap = range_of(m.data(), len, pfns);
    REQUIRE(!mirror::range_fault(*rt, snap));
    CHECK(count(pfns, pfn::valid, pfn::write) == pages);
    auto w = range_of(m.data(), len, pfns, pfn::req_fault | pfn::req_write);
    REQUIRE(!mirror::range_fault(*rt, w));
    CHECK(count(pfns, pfn::valid | pfn::write) == pages);
    fill_salted(m.data(), len, 9);   // the parent writes; the child must not see it
    CHECK(child.wait() == 0);
}

TEST_CASE("an invalidation racing range_fault makes it say EBUSY; read_begin again and it succeeds") {
    auto rt = make_runtime();
    constexpr std::size_t len = 8 * kPage;
    ManagedPattern m(*rt, len);
    struct Dev : mirror::Notifier {
        bool invalidate(const mirror::Invalidation&, std::uint64_t) noexcept override { return true; }
    } dev;
    REQUIRE(!rt->notifiers().insert(dev, addr_of(m.data()), len));
    std::vector<std::uint64_t> pfns;
    auto r = range_of(m.data(), len, pfns, pfn::req_fault);
    r.notifier = &dev;
    r.notifier_seq = dev.read_begin();
    REQUIRE(rt->migrate(m.data(), len, Target::device).ok());   // invalidates: event migrate
    CHECK(mirror::range_fault(*rt, r) == std::errc::device_or_resource_busy);
    // Again, as a driver does: the faults that bring the device pages home
    // invalidate this very notifier (delivered from the runtime's thread),
    // so a pass may say EBUSY once more.
    std::error_code ec;
    for (int pass = 0; pass < 100; ++pass) {
        r.notifier_seq = dev.read_begin();
        if ((ec = mirror::range_fault(*rt, r)) != std::errc::device_or_resource_busy) break;
    }
    REQUIRE(!ec);
    CHECK(count(pfns, pfn::valid) == len / kPage);
    CHECK(first_mismatch(m.data(), len) == len);
    rt->notifiers().remove(dev);
}

// ---- the address-space view: permissions re-checked, or cached when mprotect is reported ----

TEST_CASE("a plain mprotect is seen by the next range_fault (protection not hooked: no cache)") {
    auto rt = make_runtime();
    constexpr std::size_t len = 8 * kPage;
    ManagedPattern m(*rt, len);
    std::vector<std::uint64_t> pfns;
    auto w = range_of(m.data(), len, pfns, pfn::req_fault | pfn::req_write);
    REQUIRE(!mirror::range_fault(*rt, w));
    CHECK(count(pfns, pfn::valid | pfn::write) == len / kPage);
    REQUIRE(::mprotect(m.data(), len, PROT_READ) == 0);   // no event, no hook
    CHECK(mirror::range_fault(*rt, w) == std::errc::operation_not_permitted);
    auto snap = range_of(m.data(), len, pfns);
    REQUIRE(!mirror::range_fault(*rt, snap));
    CHECK(count(pfns, pfn::valid, pfn::write) == len / kPage);
    REQUIRE(::mprotect(m.data(), len, PROT_NONE) == 0);
    REQUIRE(!mirror::range_fault(*rt, snap));
    CHECK(count(pfns, pfn::error) == len / kPage);
    CHECK(rt->stats().view_cache_hits == 0);
    REQUIRE(::mprotect(m.data(), len, PROT_READ | PROT_WRITE) == 0);
    CHECK(first_mismatch(m.data(), len) == len);
}

TEST_CASE("protection hooked: managed memory's mappings come from the cache until protect, munmap or mremap") {
    auto rt = make_runtime();
    rt->protection_hooked(true);
    constexpr std::size_t pages = 16, len = pages * kPage;
    ManagedPattern m(*rt, len);
    std::vector<std::uint64_t> pfns;
    auto w = range_of(m.data(), len, pfns, pfn::req_fault | pfn::req_write);
    REQUIRE(!mirror::range_fault(*rt, w));
    const auto before = rt->stats();
    for (int i = 0; i < 10; ++i) REQUIRE(!mirror::range_fault(*rt, w));
    auto after = rt->stats();
    CHECK(after.view_cache_hits - before.view_cache_hits == 10);
    CHECK(after.view_kernel_queries == before.view_kernel_queries);

    SECTION("protect() makes the next lookup ask the kernel, and it sees read-only") {
        REQUIRE(!rt->protect(m.page(2), 2 * kPage, PROT_READ));
        CHECK(mirror::range_fault(*rt, w) == std::errc::operation_not_permitted);
        CHECK(rt->stats().view_kernel_queries > after.view_kernel_queries);
        auto snap = range_of(m.data(), len, pfns);
        REQUIRE(!mirror::range_fault(*rt, snap));
        CHECK(count(pfns, pfn::valid | pfn::write) == pages - 2);
        CHECK(!(pfns[2] & pfn::write));
        CHECK(!(pfns[3] & pfn::write));
    }
    SECTION("munmap of part of it: a write fault there is EFAULT, the rest still maps") {
        REQUIRE(::munmap(m.page(8), 8 * kPage) == 0);
        CHECK(mirror::range_fault(*rt, w) == std::errc::bad_address);
        auto head = range_of(m.data(), 8 * kPage, pfns, pfn::req_fault | pfn::req_write);
        REQUIRE(!mirror::range_fault(*rt, head));
        CHECK(count(pfns, pfn::valid | pfn::write) == 8);
    }
    SECTION("memory that is not managed is never served from the cache") {
        Mapping plain(len);
        REQUIRE(plain);
        auto p = range_of(plain.data(), len, pfns, pfn::req_fault);
        REQUIRE(!mirror::range_fault(*rt, p));
        const auto hits = rt->stats().view_cache_hits;
        REQUIRE(::mprotect(plain.data(), len, PROT_NONE) == 0);   // not reported: still seen
        CHECK(mirror::range_fault(*rt, p) == std::errc::bad_address);
        CHECK(rt->stats().view_cache_hits == hits);
    }
}

TEST_CASE("a transparent huge page is reported with map order 9; 4 KiB pages with 0") {
    auto rt = make_runtime();
    constexpr std::size_t huge = 2u << 20;
    Mapping m(huge, huge);
    REQUIRE(m);
    std::byte* p = m.data();
    if (::madvise(p, huge, MADV_HUGEPAGE) != 0) {
        WARN("madvise(MADV_HUGEPAGE) refused (" << std::strerror(errno) << "): no transparent huge pages, case not run");
        return;
    }
    std::memset(p, 1, huge);
    std::vector<std::uint64_t> pfns;
    auto snap = range_of(p, huge, pfns);
    REQUIRE(!mirror::range_fault(*rt, snap));
    if (pfn::map_order(pfns[0]) == 0) {
        WARN("the kernel gave 4 KiB pages here (THP off, or no free huge page): case not run");
        return;
    }
    for (std::size_t i = 0; i < huge / kPage; ++i) {
        INFO("page " << i);
        CHECK(pfn::map_order(pfns[i]) == 9);
        CHECK((pfns[i] & (pfn::valid | pfn::write)) == (pfn::valid | pfn::write));
    }
    // Split by a partial munmap of its tail: what is left is 4 KiB pages.
    REQUIRE(::munmap(p + huge / 2, huge / 2) == 0);
    auto half = range_of(p, huge / 2, pfns);
    REQUIRE(!mirror::range_fault(*rt, half));
    for (auto v : pfns) CHECK(pfn::map_order(v) == 0);
}
