// Data round trips: memory goes to the device and comes home (by a CPU touch
// or by request) byte for byte; the result counts and page states say what
// happened; never-touched pages cost nothing; sub-ranges, repeated
// migrations, managed (not allocated) memory and several configurations.
#include <catch2/catch.hpp>

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "runtime/reader_placement.hpp"
#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

void check_result_sums(const MigrateResult& r) {
    INFO("requested " << r.requested << " migrated " << r.migrated << " already_there " << r.already_there
                      << " failed " << r.failed << " error " << r.error.message());
    CHECK(r.migrated + r.already_there + r.failed == r.requested);
    CHECK(r.seconds >= 0);
    if (r.failed == 0) CHECK(!r.error);
    else CHECK(r.error);
}

}  // namespace

TEST_CASE("8 MiB round trip: to the device, home again on CPU reads") {
    const std::string conf = GENERATE(as<std::string>{}, kMemfdConf, "arena=memfd,arena_size=64M,engine=memcpy",
                                      "arena=memfd,arena_size=64M,fault_threads=4",
                                      "arena=memfd,arena_size=64M,fault_around=4K",
                                      "arena=memfd,arena_size=64M,migrate_batch=64K");
    INFO("config " << conf);
    auto rt = make_runtime(conf);
    constexpr std::size_t len = 8 * MiB, pages = len / kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    CHECK(count_state(*rt, p, len, PageState::host) == pages);

    const auto s0 = rt->stats();
    const auto r = migrate_ok(*rt, p, len, Target::device);
    check_result_sums(r);
    CHECK(r.requested == pages);
    CHECK(r.migrated == pages);
    CHECK(r.already_there == 0);
    CHECK(r.failed == 0);
    CHECK(r.bytes == len);
    CHECK(count_state(*rt, p, len, PageState::device) == pages);
    CHECK(cpu_mapped_pages(p, len) == 0);   // the CPU copies are gone
    const auto s1 = rt->stats();
    CHECK(s1.device_pages == pages);
    CHECK(s1.pages_to_device - s0.pages_to_device == pages);
    CHECK(s1.bytes_to_device - s0.bytes_to_device == len);
    CHECK(s1.arena.used_pages == pages);
    {
        auto info = range_containing(*rt, p);
        REQUIRE(info);
        CHECK(info->owned);
        CHECK(info->start == addr_of(p));
        CHECK(info->len == len);
        CHECK(info->pages[static_cast<int>(PageState::device)] == pages);
        CHECK(info->pages[static_cast<int>(PageState::host)] == 0);
    }

    // Every byte, read by the CPU: faults bring the pages home.
    CHECK(first_mismatch(p, len) == len);
    CHECK(count_state(*rt, p, len, PageState::host) == pages);
    CHECK(cpu_mapped_pages(p, len) == static_cast<long>(pages));
    CHECK(eventually([&] { return rt->stats().device_pages == 0; }));
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));
    const auto s2 = rt->stats();
    CHECK(s2.pages_to_host_on_fault - s1.pages_to_host_on_fault == pages);
    CHECK(s2.pages_to_host - s1.pages_to_host == pages);
    CHECK(s2.bytes_to_host - s1.bytes_to_host == len);
    CHECK(s2.device_faults > s1.device_faults);
    CHECK(s2.device_faults - s1.device_faults <= pages);
    CHECK(s2.faults >= s2.device_faults);

    // Home pages are ordinary memory again: a write sticks and costs no fault.
    const auto faults = rt->stats().faults;
    fill_salted(p, len, 7);
    CHECK(first_mismatch_salted(p, len, 7) == len);
    CHECK(rt->stats().faults == faults);
    CHECK(!rt->release(p, len));
    CHECK(rt->ranges().empty());
}

TEST_CASE("explicit migration home: data back, no CPU fault needed") {
    auto rt = make_runtime();
    constexpr std::size_t len = 8 * MiB, pages = len / kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    REQUIRE(migrate_ok(*rt, p, len, Target::device).migrated == pages);

    const auto s1 = rt->stats();
    const auto r = migrate_ok(*rt, p, len, Target::host);
    check_result_sums(r);
    CHECK(r.requested == pages);
    CHECK(r.migrated == pages);
    CHECK(r.already_there == 0);
    CHECK(r.failed == 0);
    CHECK(r.bytes == len);
    CHECK(count_state(*rt, p, len, PageState::host) == pages);
    CHECK(cpu_mapped_pages(p, len) == static_cast<long>(pages));
    const auto s2 = rt->stats();
    CHECK(s2.device_pages == 0);
    CHECK(s2.arena.used_pages == 0);
    CHECK(s2.pages_to_host - s1.pages_to_host == pages);
    CHECK(s2.pages_to_host_on_fault == s1.pages_to_host_on_fault);

    CHECK(first_mismatch(p, len) == len);
    const auto s3 = rt->stats();
    CHECK(s3.faults == s2.faults);   // the pages were mapped again by the migration

    // Home again: a second request finds them there.
    const auto r2 = migrate_ok(*rt, p, len, Target::host);
    CHECK(r2.already_there == pages);
    CHECK(r2.migrated == 0);
    CHECK(r2.bytes == 0);
}

TEST_CASE("migrating twice: the second call finds every page there") {
    auto rt = make_runtime();
    constexpr std::size_t len = 4 * MiB, pages = len / kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    REQUIRE(migrate_ok(*rt, p, len, Target::device).migrated == pages);
    const auto s1 = rt->stats();
    const auto r = migrate_ok(*rt, p, len, Target::device);
    check_result_sums(r);
    CHECK(r.requested == pages);
    CHECK(r.already_there == pages);
    CHECK(r.migrated == 0);
    CHECK(r.failed == 0);
    CHECK(r.bytes == 0);
    const auto s2 = rt->stats();
    CHECK(s2.pages_to_device == s1.pages_to_device);
    CHECK(s2.device_pages == pages);
    CHECK(s2.arena.used_pages == pages);   // no second copy held
    CHECK(first_mismatch(p, len) == len);
}

TEST_CASE("never-touched pages go to the device for free and read as zero") {
    // One page per first touch: by default a first touch zero-fills at least
    // 64 KiB around it, and those pages are then present (copied when they
    // move), which would blur which pages the program touched.
    auto rt = make_runtime("arena=memfd,arena_size=64M,fault_around=4K");
    constexpr std::size_t len = 1 * MiB, pages = len / kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    CHECK(count_state(*rt, p, len, PageState::none) == pages);
    {
        auto info = range_containing(*rt, p);
        REQUIRE(info);
        CHECK(info->pages[static_cast<int>(PageState::none)] == pages);
    }

    SECTION("all of them") {
        const auto r = migrate_ok(*rt, p, len, Target::device);
        check_result_sums(r);
        CHECK(r.requested == pages);
        CHECK(r.failed == 0);
        CHECK(r.bytes == 0);
        CHECK(rt->stats().bytes_to_device == 0);
        CHECK(first_nonzero(p, len) == len);
        // Written afterwards, they hold what was written, through another trip.
        fill_pattern(p, len);
        REQUIRE(migrate_ok(*rt, p, len, Target::device).migrated == pages);
        CHECK(first_mismatch(p, len) == len);
    }
    SECTION("read by the CPU: zero-filled and counted") {
        const auto s0 = rt->stats();
        CHECK(first_nonzero(p, len) == len);
        // The fault thread may count a batch just after it woke the reader.
        CHECK(eventually([&] { return rt->stats().pages_zero_filled - s0.pages_zero_filled == pages; }));
        const auto s1 = rt->stats();
        CHECK(s1.pages_zero_filled - s0.pages_zero_filled == pages);
        CHECK(s1.first_touch_faults > s0.first_touch_faults);
        CHECK(s1.first_touch_faults - s0.first_touch_faults <= pages);
        CHECK(s1.device_faults == s0.device_faults);
        CHECK(s1.arena.used_pages == 0);
        CHECK(count_state(*rt, p, len, PageState::host) == pages);
    }
    SECTION("every other page touched: only those cost bytes") {
        for (std::size_t i = 0; i < pages; i += 2) fill_pattern(p + i * kPage, kPage);
        const auto r = migrate_ok(*rt, p, len, Target::device);
        check_result_sums(r);
        CHECK(r.requested == pages);
        CHECK(r.failed == 0);
        CHECK(r.bytes == (pages / 2) * kPage);
        const auto st = states(*rt, p, len);
        for (std::size_t i = 0; i < pages; i += 2) {
            INFO("page " << i);
            CHECK(st[i] == PageState::device);
        }
        for (std::size_t i = 0; i < pages; ++i) {
            INFO("page " << i);
            if (i % 2 == 0) CHECK(first_mismatch(p + i * kPage, kPage) == kPage);
            else CHECK(first_nonzero(p + i * kPage, kPage) == kPage);
        }
    }
}

TEST_CASE("manage() of an existing buffer keeps its data through trips") {
    auto rt = make_runtime();
    constexpr std::size_t len = 4 * MiB, pages = len / kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);

    REQUIRE(!rt->manage(m.data(), len));
    CHECK(first_mismatch(m.data(), len) == len);
    CHECK(count_state(*rt, m.data(), len, PageState::host) == pages);
    {
        auto info = range_containing(*rt, m.data());
        REQUIRE(info);
        CHECK_FALSE(info->owned);
        CHECK(info->start == addr_of(m.data()));
        CHECK(info->len == len);
    }

    auto r = migrate_ok(*rt, m.data(), len, Target::device);
    CHECK(r.migrated == pages);
    CHECK(r.bytes == len);
    CHECK(first_mismatch(m.data(), len) == len);
    REQUIRE(migrate_ok(*rt, m.data(), len, Target::device).migrated == pages);

    // unmanage with every page on the device: they come home first.
    REQUIRE(!rt->unmanage(m.data(), len));
    CHECK(rt->ranges().empty());
    CHECK(rt->stats().device_pages == 0);
    CHECK(first_mismatch(m.data(), len) == len);
    // Plain memory again: the runtime no longer sees its faults.
    const auto faults = rt->stats().faults;
    REQUIRE(::madvise(m.data(), len, MADV_DONTNEED) == 0);
    CHECK(first_nonzero(m.data(), len) == len);
    CHECK(rt->stats().faults == faults);
}

TEST_CASE("manage() of a partly touched buffer: untouched pages are NONE and read zero") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 64, len = pages * kPage;
    Mapping m(len);
    REQUIRE(m);
    for (std::size_t i = 0; i < pages; i += 4) fill_pattern(m.page(i), kPage);
    REQUIRE(!rt->manage(m.data(), len));
    const auto st = states(*rt, m.data(), len);
    CHECK(count_state(st, PageState::host) == pages / 4);
    CHECK(count_state(st, PageState::none) == pages - pages / 4);
    const auto r = migrate_ok(*rt, m.data(), len, Target::device);
    check_result_sums(r);
    CHECK(r.failed == 0);
    CHECK(r.bytes == (pages / 4) * kPage);
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        if (i % 4 == 0) CHECK(first_mismatch(m.page(i), kPage) == kPage);
        else CHECK(first_nonzero(m.page(i), kPage) == kPage);
    }
}

TEST_CASE("sub-range migrations move exactly the pages asked for") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 512, len = pages * kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);

    auto r1 = migrate_ok(*rt, p + 100 * kPage, 200 * kPage, Target::device);   // [100, 300)
    CHECK(r1.requested == 200);
    CHECK(r1.migrated == 200);
    CHECK(cpu_mapped_pages(p + 100 * kPage, 200 * kPage) == 0);
    CHECK(cpu_mapped_pages(p, 100 * kPage) == 100);
    CHECK(cpu_mapped_pages(p + 300 * kPage, 212 * kPage) == 212);
    auto st = states(*rt, p, len);
    for (std::size_t i = 0; i < pages; ++i) {
        const bool dev = i >= 100 && i < 300;
        INFO("page " << i);
        CHECK(st[i] == (dev ? PageState::device : PageState::host));
    }
    auto r2 = migrate_ok(*rt, p + 200 * kPage, 200 * kPage, Target::device);   // [200, 400)
    CHECK(r2.requested == 200);
    CHECK(r2.already_there == 100);
    CHECK(r2.migrated == 100);
    CHECK(r2.bytes == 100 * kPage);
    CHECK(rt->stats().device_pages == 300);

    auto r3 = migrate_ok(*rt, p + 150 * kPage, 100 * kPage, Target::host);   // [150, 250) home
    CHECK(r3.migrated == 100);
    CHECK(r3.already_there == 0);
    auto r4 = migrate_ok(*rt, p + 399 * kPage, 2 * kPage, Target::host);   // 399 device, 400 host
    CHECK(r4.migrated == 1);
    CHECK(r4.already_there == 1);
    auto r5 = migrate_ok(*rt, p + 511 * kPage, kPage, Target::device);   // the last page alone
    CHECK(r5.migrated == 1);
    auto r6 = migrate_ok(*rt, p, kPage, Target::device);   // the first page alone
    CHECK(r6.migrated == 1);

    st = states(*rt, p, len);
    std::size_t dev = 0;
    for (std::size_t i = 0; i < pages; ++i) {
        const bool want = i == 0 || i == 511 || (i >= 100 && i < 150) || (i >= 250 && i < 399);
        INFO("page " << i);
        CHECK(st[i] == (want ? PageState::device : PageState::host));
        dev += want;
    }
    CHECK(rt->stats().device_pages == dev);
    auto one = rt->state(p + 260 * kPage + 123);   // any address inside the page
    REQUIRE(one.ok());
    CHECK(*one == PageState::device);

    // Read in a scattered order: last page, a middle page, then everything.
    CHECK(first_mismatch(p + 511 * kPage, kPage) == kPage);
    CHECK(first_mismatch(p + 300 * kPage, kPage) == kPage);
    CHECK(first_mismatch(p + 260 * kPage + 17, 10) == 10);
    CHECK(first_mismatch(p, len) == len);
    CHECK(count_state(*rt, p, len, PageState::host) == pages);
}

TEST_CASE("one migration may span adjacent managed ranges") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 128, len = pages * kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    REQUIRE(!rt->manage(m.data(), len / 2));
    REQUIRE(!rt->manage(m.page(pages / 2), len / 2));
    CHECK(rt->ranges().size() == 2);
    const auto r = migrate_ok(*rt, m.page(32), 64 * kPage, Target::device);   // 32 pages of each
    CHECK(r.requested == 64);
    CHECK(r.migrated == 64);
    CHECK(count_state(*rt, m.data(), len, PageState::device) == 64);
    CHECK(first_mismatch(m.data(), len) == len);
}

TEST_CASE("writes between trips are carried: the device copy is never stale") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 256, len = pages * kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    for (std::uint8_t salt = 0; salt < 6; ++salt) {
        INFO("round " << int(salt));
        fill_salted(p, len, salt);
        const auto r = migrate_ok(*rt, p, len, Target::device);
        CHECK(r.migrated == pages);
        if (salt % 2) REQUIRE(migrate_ok(*rt, p, len, Target::host).migrated == pages);
        CHECK(first_mismatch_salted(p, len, salt) == len);
    }
    // A single byte written into a device page (a write fault) lands, the rest stays.
    fill_pattern(p, len);
    REQUIRE(migrate_ok(*rt, p, len, Target::device).migrated == pages);
    p[5 * kPage + 77] = std::byte{0x5A};
    CHECK(p[5 * kPage + 77] == std::byte{0x5A});
    CHECK(first_mismatch(p + 5 * kPage, 77) == 77);
    CHECK(first_mismatch(p + 5 * kPage + 78, kPage - 78) == kPage - 78);
    REQUIRE(migrate_ok(*rt, p + 5 * kPage, kPage, Target::device).migrated == 1);
    CHECK(p[5 * kPage + 77] == std::byte{0x5A});
}

TEST_CASE("transparent-huge-page memory round-trips") {
    auto rt = make_runtime();
    constexpr std::size_t len = 8 * MiB, pages = len / kPage;
    Mapping m(len, 2 * MiB);
    REQUIRE(m);
    ::madvise(m.data(), len, MADV_HUGEPAGE);   // best effort
    fill_pattern(m.data(), len);
    REQUIRE(!rt->manage(m.data(), len));
    // Half of it, at 4 KiB granularity inside huge pages.
    const auto r = migrate_ok(*rt, m.page(3), 1000 * kPage, Target::device);
    CHECK(r.migrated == 1000);
    CHECK(r.bytes == 1000 * kPage);
    CHECK(count_state(*rt, m.data(), len, PageState::device) == 1000);
    CHECK(first_mismatch(m.data(), len) == len);
    REQUIRE(migrate_ok(*rt, m.data(), len, Target::device).migrated == pages);
    CHECK(first_mismatch(m.data(), len) == len);
}

TEST_CASE("release() of allocated memory frees its device pages") {
    auto rt = make_runtime();
    constexpr std::size_t len = 2 * MiB + 3 * kPage, pages = len / kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    CHECK(addr_of(p) % kPage == 0);
    fill_pattern(p, len);
    REQUIRE(migrate_ok(*rt, p, len, Target::device).migrated == pages);
    CHECK(rt->stats().arena.used_pages == pages);
    CHECK(rt->stats().ranges == 1);
    CHECK(rt->stats().managed_bytes == len);
    REQUIRE(!rt->release(p, len));
    CHECK(rt->ranges().empty());
    CHECK(rt->stats().ranges == 0);
    CHECK(rt->stats().device_pages == 0);
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));

    // allocate() rounds up to whole pages.
    auto b = rt->allocate(100);
    REQUIRE(b.ok());
    auto info = range_containing(*rt, *b);
    REQUIRE(info);
    CHECK(info->len == kPage);
    CHECK(!rt->release(*b, 100));
}

TEST_CASE("config(), describe() and stats() report the runtime as configured") {
    auto rt = make_runtime("arena=memfd,arena_size=32M,fault_threads=2,engine=memcpy");
    CHECK(rt->config().fault_threads == 2u);
    CHECK(rt->config().arena.size == 32 * MiB);
    CHECK(rt->config().engine == migrate::EngineKind::memcpy);
    const auto d = rt->describe();
    INFO(d);
    CHECK(!d.empty());
    CHECK(d.find('\n') == std::string::npos);
    CHECK(d.find("memcpy") != std::string::npos);
    const auto s = rt->stats();
    CHECK(s.ranges == 0);
    CHECK(s.device_pages == 0);
    CHECK(s.arena.limit_pages == 32 * MiB / kPage);
}

namespace {
// The 2 MiB huge pages free in the kernel's pool (-1 when unreadable).
long free_huge_pages() {
    std::FILE* f = std::fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "re");
    if (!f) return -1;
    long n = -1;
    if (std::fscanf(f, "%ld", &n) != 1) n = -1;
    std::fclose(f);
    return n;
}
}  // namespace

TEST_CASE("the default configuration works on any machine and takes no huge pages") {
    std::string why;
    const long free_before = free_huge_pages();
    auto r = Runtime::create(RuntimeConfig{}, &why);
    INFO(r.error().message() << ": " << why);
    REQUIRE(r.ok());
    auto& rt = **r;
    INFO(rt.describe());
    CHECK(!rt.describe().empty());
    // memfd: needs no setup, and huge pages stay for whoever reserved them.
    CHECK(rt.config().arena.backend == devmem::Backend::memfd);
    CHECK(rt.describe().find("shmem memfd") != std::string::npos);
    constexpr std::size_t len = 4 * MiB, pages = len / kPage;
    auto a = rt.allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    const auto res = migrate_ok(rt, p, len, Target::device);
    CHECK(res.migrated == pages);
    CHECK(res.failed == 0);
    CHECK(first_mismatch(p, len) == len);
    CHECK(rt.stats().metadata_bytes > 0);
    CHECK(free_huge_pages() == free_before);
}

TEST_CASE("a first touch zero-fills a 64 KiB window, and walks in either direction grow it") {
    auto rt = make_runtime();
    constexpr std::size_t len = 8 * MiB, pages = len / kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    // A random touch: its aligned 16 pages, nothing more.
    p[100 * kPage] = std::byte{1};
    CHECK(count_state(*rt, p, len, PageState::host) == 16);
    CHECK(count_state(*rt, p + 96 * kPage, 16 * kPage, PageState::host) == 16);
    // Walking down from the top of the range (as sort does) takes far fewer
    // faults than 64 KiB windows would: the window doubles up to fault_around.
    const auto f0 = rt->stats().first_touch_faults;
    for (std::size_t i = pages; i-- > pages / 2;) p[i * kPage] = std::byte{2};
    const auto walk_down = rt->stats().first_touch_faults - f0;
    INFO("faults walking down 4 MiB: " << walk_down);
    CHECK(walk_down < (pages / 2) / 16 / 4);
    // And up, the same.
    const auto f1 = rt->stats().first_touch_faults;
    for (std::size_t i = 128; i < pages / 2; ++i) p[i * kPage] = std::byte{3};
    const auto walk_up = rt->stats().first_touch_faults - f1;
    INFO("faults walking up: " << walk_up);
    CHECK(walk_up < (pages / 2 - 128) / 16 / 4);
    // All but the first 128 pages, less the 16 the random touch filled.
    CHECK(count_state(*rt, p, len, PageState::host) == pages - 128 + 16);
    CHECK(p[100 * kPage] == std::byte{1});
    CHECK(p[(pages - 1) * kPage] == std::byte{2});
    REQUIRE(!rt->release(p, len));
}

namespace {
// The uhmm-fault-* threads of this process, with the CPUs each may run on.
std::vector<std::set<int>> fault_reader_cpus() {
    std::vector<std::set<int>> out;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream comm(entry.path() / "comm");
        std::string name;
        std::getline(comm, name);
        if (name.rfind("uhmm-fault-", 0) != 0) continue;
        cpu_set_t set;
        CPU_ZERO(&set);
        const pid_t tid = std::stoi(entry.path().filename().string());
        if (::sched_getaffinity(tid, sizeof set, &set) != 0) continue;
        std::set<int> cpus;
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(c, &set)) cpus.insert(c);
        out.push_back(cpus);
    }
    return out;
}

std::set<int> my_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    REQUIRE(::sched_getaffinity(0, sizeof set, &set) == 0);
    std::set<int> cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) cpus.insert(c);
    return cpus;
}

// Threads, one kept on each CPU, read back device pages written by pattern.
void touch_from_each_cpu(Runtime& rt, const std::set<int>& cpus) {
    constexpr std::size_t len = 8 * MiB;
    auto a = rt.allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    const auto faults_before = rt.stats().faults;
    CHECK(migrate_ok(rt, p, len, Target::device).migrated == len / kPage);
    std::vector<std::thread> threads;
    std::atomic<std::size_t> bad{0};
    const std::size_t share = len / cpus.size() / kPage * kPage;
    std::size_t i = 0;
    for (int cpu : cpus) {
        threads.emplace_back([&, cpu, part = i++] {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
            std::byte* q = p + part * share;
            // Every other page, so that faults stay single pages.
            for (std::size_t off = 0; off < share; off += 2 * kPage)
                if (first_mismatch(q + off, kPage) != kPage) bad.fetch_add(1);
        });
    }
    for (auto& t : threads) t.join();
    CHECK(bad.load() == 0);
    CHECK(first_mismatch(p, len) == len);
    CHECK(rt.stats().faults > faults_before);
    CHECK(!rt.release(p, len));
}
}  // namespace

TEST_CASE("fault readers: auto keeps one on each CPU; an explicit count is the scheduler's to place") {
    const std::set<int> cpus = my_cpus();
    REQUIRE(fault_reader_cpus().empty());   // no runtime left from another case

    SECTION("auto: one reader per CPU of the process, each pinned to its own") {
        auto rt = make_runtime("arena=memfd,arena_size=32M,fault_threads=auto");
        const auto readers = fault_reader_cpus();
        INFO(rt->describe());
        if (cpus.size() <= kMaxAutoReaders) {
            REQUIRE(readers.size() == cpus.size());
            std::set<int> covered;
            for (const auto& r : readers) {
                CHECK(r.size() == 1u);
                covered.insert(r.begin(), r.end());
            }
            CHECK(covered == cpus);
            CHECK(rt->describe().find("(one on each CPU)") != std::string::npos);
        } else {
            CHECK(readers.size() == kMaxAutoReaders);
        }
        touch_from_each_cpu(*rt, cpus);
    }
    SECTION("auto in a process kept on one CPU: one reader, on that CPU") {
        cpu_set_t one, saved;
        REQUIRE(::sched_getaffinity(0, sizeof saved, &saved) == 0);
        CPU_ZERO(&one);
        CPU_SET(*cpus.rbegin(), &one);
        REQUIRE(::sched_setaffinity(0, sizeof one, &one) == 0);
        auto rt = make_runtime("arena=memfd,arena_size=32M,fault_threads=auto");
        REQUIRE(::sched_setaffinity(0, sizeof saved, &saved) == 0);
        const auto readers = fault_reader_cpus();
        REQUIRE(readers.size() == 1u);
        CHECK(readers[0] == std::set<int>{*cpus.rbegin()});
        touch_from_each_cpu(*rt, cpus);
    }
    SECTION("fault_threads=3: three readers, none pinned") {
        auto rt = make_runtime("arena=memfd,arena_size=32M,fault_threads=3");
        const auto readers = fault_reader_cpus();
        REQUIRE(readers.size() == 3u);
        for (const auto& r : readers) CHECK(r == cpus);
        CHECK(rt->describe().find("fault_threads=3;") != std::string::npos);
        touch_from_each_cpu(*rt, cpus);
    }
    CHECK(fault_reader_cpus().empty());   // stopped with their runtime
}
