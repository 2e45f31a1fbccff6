// What the runtime refuses: manage() of memory it cannot serve (unaligned,
// empty, unmapped, shared, file-backed, hugetlb, already managed, owned by
// another userfaultfd), unmanage() of something that is not exactly a range,
// migrate()/residency() outside managed memory. Each refusal has its errno, a
// `why` for manage, and changes nothing: the data stays, no range appears.
#include <catch2/catch.hpp>

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include <cstdio>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

// manage() must refuse with `expected`, give a why, and leave no range.
void expect_manage_refused(Runtime& rt, void* p, std::size_t len, std::errc expected) {
    const auto before = rt.stats().ranges;
    const auto nranges = rt.ranges().size();
    std::string why;
    const auto ec = rt.manage(p, len, &why);
    INFO("manage(" << p << ", " << len << ") = " << ec.message() << " why '" << why << "'");
    CHECK(ec == expected);
    CHECK(!why.empty());
    CHECK(rt.stats().ranges == before);
    CHECK(rt.ranges().size() == nranges);
    // Without why: the same code.
    CHECK(rt.manage(p, len) == expected);
    CHECK(rt.ranges().size() == nranges);
}

struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

}  // namespace

TEST_CASE("manage refuses unaligned addresses and lengths and zero lengths") {
    auto rt = make_runtime();
    Mapping m(16 * kPage);
    REQUIRE(m);
    fill_pattern(m.data(), m.size());

    expect_manage_refused(*rt, m.data() + 1, 4 * kPage, std::errc::invalid_argument);
    expect_manage_refused(*rt, m.data() + 2048, 4 * kPage, std::errc::invalid_argument);
    expect_manage_refused(*rt, m.data(), 4 * kPage + 1, std::errc::invalid_argument);
    expect_manage_refused(*rt, m.data(), kPage - 1, std::errc::invalid_argument);
    expect_manage_refused(*rt, m.data(), 0, std::errc::invalid_argument);

    CHECK(first_mismatch(m.data(), m.size()) == m.size());
    // Nothing was half-registered: the same memory can be managed now.
    REQUIRE(!rt->manage(m.data(), m.size()));
    CHECK(rt->ranges().size() == 1);
    CHECK(first_mismatch(m.data(), m.size()) == m.size());
}

TEST_CASE("manage refuses addresses that are not wholly mapped with EFAULT") {
    auto rt = make_runtime();
    Mapping m(8 * kPage);
    REQUIRE(m);
    fill_pattern(m.data(), m.size());
    REQUIRE(::munmap(m.page(4), 4 * kPage) == 0);   // pages 4..7 are a hole now

    SECTION("an unmapped range") { expect_manage_refused(*rt, m.page(4), 4 * kPage, std::errc::bad_address); }
    SECTION("a range whose tail is unmapped") {
        expect_manage_refused(*rt, m.data(), 8 * kPage, std::errc::bad_address);
    }
    SECTION("a range with a hole in the middle") {
        REQUIRE(::munmap(m.page(1), kPage) == 0);   // mapped | hole | mapped
        expect_manage_refused(*rt, m.data(), 3 * kPage, std::errc::bad_address);
    }
    SECTION("address zero") { expect_manage_refused(*rt, nullptr, kPage, std::errc::bad_address); }
    CHECK(first_mismatch(m.data(), kPage) == kPage);
    ::munmap(m.data(), 8 * kPage);
    m.forget();
}

TEST_CASE("manage refuses shared anonymous memory with ENOENT") {
    auto rt = make_runtime();
    Mapping m(8 * kPage, kPage, MAP_SHARED | MAP_ANONYMOUS);
    REQUIRE(m);
    fill_pattern(m.data(), m.size());
    expect_manage_refused(*rt, m.data(), m.size(), std::errc::no_such_file_or_directory);
    CHECK(first_mismatch(m.data(), m.size()) == m.size());
    // Still ordinary shared memory: writes land.
    m.page(3)[5] = std::byte{0xAB};
    CHECK(m.page(3)[5] == std::byte{0xAB});
}

TEST_CASE("manage refuses file-backed memory with EINVAL") {
    auto rt = make_runtime();
    const std::size_t len = 8 * kPage;

    SECTION("a private mapping of a memfd") {
        Fd f{static_cast<int>(::syscall(SYS_memfd_create, "uhmm-test", 0))};
        REQUIRE(f.fd >= 0);
        REQUIRE(::ftruncate(f.fd, static_cast<off_t>(len)) == 0);
        void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, f.fd, 0);
        REQUIRE(p != MAP_FAILED);
        auto* b = static_cast<std::byte*>(p);
        fill_pattern(b, len);
        expect_manage_refused(*rt, p, len, std::errc::invalid_argument);
        CHECK(first_mismatch(b, len) == len);
        ::munmap(p, len);
    }
    SECTION("a private mapping of a file in /tmp") {
        char name[] = "/tmp/uhmm-rt-refusal-XXXXXX";
        Fd f{::mkstemp(name)};
        REQUIRE(f.fd >= 0);
        ::unlink(name);
        REQUIRE(::ftruncate(f.fd, static_cast<off_t>(len)) == 0);
        void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, f.fd, 0);
        REQUIRE(p != MAP_FAILED);
        auto* b = static_cast<std::byte*>(p);
        fill_pattern(b, len);
        expect_manage_refused(*rt, p, len, std::errc::invalid_argument);
        CHECK(first_mismatch(b, len) == len);
        ::munmap(p, len);
    }
    SECTION("a shared mapping of a file is refused too") {
        char name[] = "/tmp/uhmm-rt-refusal-XXXXXX";
        Fd f{::mkstemp(name)};
        REQUIRE(f.fd >= 0);
        ::unlink(name);
        REQUIRE(::ftruncate(f.fd, static_cast<off_t>(len)) == 0);
        void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, f.fd, 0);
        REQUIRE(p != MAP_FAILED);
        const auto ec = rt->manage(p, len);
        INFO(ec.message());
        CHECK((ec == std::errc::invalid_argument || ec == std::errc::no_such_file_or_directory));
        CHECK(rt->ranges().empty());
        ::munmap(p, len);
    }
}

TEST_CASE("manage refuses hugetlb memory with EINVAL") {
    auto rt = make_runtime();
    const std::size_t len = 2 * MiB;
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (p == MAP_FAILED) {
        WARN("skipped: mmap(MAP_HUGETLB) failed here: " << std::strerror(errno)
                                                        << " (no huge pages in the pool)");
        return;
    }
    auto* b = static_cast<std::byte*>(p);
    fill_pattern(b, len);
    expect_manage_refused(*rt, p, len, std::errc::invalid_argument);
    CHECK(first_mismatch(b, len) == len);
    ::munmap(p, len);
}

TEST_CASE("manage refuses memory another userfaultfd owns with EBUSY") {
    auto rt = make_runtime();
    Mapping m(8 * kPage);
    REQUIRE(m);
    fill_pattern(m.data(), m.size());
    const int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    REQUIRE(fd >= 0);
    uffdio_api api{};
    api.api = UFFD_API;
    REQUIRE(::ioctl(fd, UFFDIO_API, &api) == 0);
    uffdio_register reg{};
    reg.range.start = addr_of(m.data());
    reg.range.len = m.size();
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    REQUIRE(::ioctl(fd, UFFDIO_REGISTER, &reg) == 0);

    expect_manage_refused(*rt, m.data(), m.size(), std::errc::device_or_resource_busy);
    CHECK(first_mismatch(m.data(), m.size()) == m.size());   // every page is present: no fault
    ::close(fd);   // unregisters
    // Now it is free.
    CHECK(!rt->manage(m.data(), m.size()));
    CHECK(first_mismatch(m.data(), m.size()) == m.size());
}

TEST_CASE("manage refuses overlap with a managed range with EEXIST") {
    auto rt = make_runtime();
    Mapping m(32 * kPage);
    REQUIRE(m);
    fill_pattern(m.data(), m.size());
    REQUIRE(!rt->manage(m.page(8), 16 * kPage));   // pages 8..23
    REQUIRE(rt->ranges().size() == 1);

    expect_manage_refused(*rt, m.page(8), 16 * kPage, std::errc::file_exists);   // the same range
    expect_manage_refused(*rt, m.page(4), 8 * kPage, std::errc::file_exists);    // overlaps the head
    expect_manage_refused(*rt, m.page(20), 8 * kPage, std::errc::file_exists);   // overlaps the tail
    expect_manage_refused(*rt, m.page(10), 2 * kPage, std::errc::file_exists);   // inside
    expect_manage_refused(*rt, m.data(), m.size(), std::errc::file_exists);      // around

    // The refused calls took nothing: the free neighbours can be managed.
    CHECK(!rt->manage(m.page(0), 8 * kPage));
    CHECK(!rt->manage(m.page(24), 8 * kPage));
    CHECK(rt->ranges().size() == 3);
    CHECK(rt->stats().ranges == 3);
    CHECK(rt->stats().managed_bytes == m.size());

    // allocate()d memory is a range too.
    auto a = rt->allocate(4 * kPage);
    REQUIRE(a.ok());
    expect_manage_refused(*rt, *a, 4 * kPage, std::errc::file_exists);
    CHECK(!rt->release(*a, 4 * kPage));
    CHECK(first_mismatch(m.data(), m.size()) == m.size());
}

TEST_CASE("unmanage of anything but exactly one managed range is ENOENT") {
    auto rt = make_runtime();
    Mapping m(32 * kPage);
    REQUIRE(m);
    fill_pattern(m.data(), m.size());
    REQUIRE(!rt->manage(m.page(8), 16 * kPage));
    REQUIRE(migrate_ok(*rt, m.page(8), 16 * kPage, Target::device).migrated == 16);

    CHECK(rt->unmanage(m.page(8), 8 * kPage) == std::errc::no_such_file_or_directory);    // a part
    CHECK(rt->unmanage(m.page(12), 12 * kPage) == std::errc::no_such_file_or_directory);  // the tail
    CHECK(rt->unmanage(m.page(4), 20 * kPage) == std::errc::no_such_file_or_directory);   // more
    CHECK(rt->unmanage(m.page(0), 8 * kPage) == std::errc::no_such_file_or_directory);    // never managed
    CHECK(rt->unmanage(m.page(8), 17 * kPage) == std::errc::no_such_file_or_directory);

    // Still managed, pages still on the device.
    REQUIRE(rt->ranges().size() == 1);
    CHECK(rt->ranges()[0].start == addr_of(m.page(8)));
    CHECK(rt->ranges()[0].len == 16 * kPage);
    CHECK(count_state(*rt, m.page(8), 16 * kPage, PageState::device) == 16);
    CHECK(rt->stats().device_pages == 16);

    // The exact range: the pages come home, then it is gone.
    CHECK(!rt->unmanage(m.page(8), 16 * kPage));
    CHECK(rt->ranges().empty());
    CHECK(rt->stats().device_pages == 0);
    CHECK(first_mismatch(m.data(), m.size()) == m.size());
    CHECK(rt->unmanage(m.page(8), 16 * kPage) == std::errc::no_such_file_or_directory);   // twice
}

TEST_CASE("release of memory that allocate() did not give is refused") {
    auto rt = make_runtime();
    Mapping m(8 * kPage);
    REQUIRE(m);
    fill_pattern(m.data(), m.size());
    REQUIRE(!rt->manage(m.data(), m.size()));
    // A managed range the application owns: release must not unmap it.
    CHECK(rt->release(m.data(), m.size()));
    CHECK(first_mismatch(m.data(), m.size()) == m.size());
    // Never managed at all.
    Mapping other(4 * kPage);
    REQUIRE(other);
    CHECK(rt->release(other.data(), other.size()));
    other.page(0)[0] = std::byte{1};   // still mapped
    CHECK(other.page(0)[0] == std::byte{1});
}

TEST_CASE("migrate outside managed memory is EFAULT, unaligned is EINVAL, and nothing moves") {
    auto rt = make_runtime();
    Mapping m(32 * kPage);
    REQUIRE(m);
    fill_pattern(m.data(), m.size());
    REQUIRE(!rt->manage(m.page(8), 16 * kPage));
    const auto before = rt->stats();

    auto expect = [&](void* p, std::size_t len, Target to, std::errc e) {
        auto r = rt->migrate(p, len, to);
        INFO("migrate(" << p << ", " << len << ") -> " << r.error().message());
        REQUIRE_FALSE(r.ok());
        CHECK(r.error() == e);
    };
    for (auto to : {Target::device, Target::host}) {
        expect(m.page(0), 8 * kPage, to, std::errc::bad_address);    // unmanaged
        expect(m.page(4), 8 * kPage, to, std::errc::bad_address);    // starts outside
        expect(m.page(20), 8 * kPage, to, std::errc::bad_address);   // ends outside
        expect(m.page(0), 32 * kPage, to, std::errc::bad_address);   // around
        expect(m.page(8) + 1, 4 * kPage, to, std::errc::invalid_argument);
        expect(m.page(8), 4 * kPage + 100, to, std::errc::invalid_argument);
    }
    // Nothing moved.
    CHECK(count_state(*rt, m.page(8), 16 * kPage, PageState::device) == 0);
    const auto after = rt->stats();
    CHECK(after.pages_to_device == before.pages_to_device);
    CHECK(after.device_pages == 0);
    CHECK(after.arena.used_pages == before.arena.used_pages);
    CHECK(first_mismatch(m.data(), m.size()) == m.size());

    // Memory that was managed and is not any more.
    REQUIRE(!rt->unmanage(m.page(8), 16 * kPage));
    expect(m.page(8), 16 * kPage, Target::device, std::errc::bad_address);
}

TEST_CASE("residency and state outside managed memory are EFAULT") {
    auto rt = make_runtime();
    Mapping m(8 * kPage);
    REQUIRE(m);
    REQUIRE(!rt->manage(m.page(2), 4 * kPage));
    std::vector<PageState> out(8);
    CHECK(rt->residency(m.data(), 8 * kPage, out) == std::errc::bad_address);
    CHECK(rt->residency(m.page(0), kPage, std::span(out).first(1)) == std::errc::bad_address);
    CHECK(!rt->residency(m.page(2), 4 * kPage, std::span(out).first(4)));
    auto s = rt->state(m.page(7));
    REQUIRE_FALSE(s.ok());
    CHECK(s.error() == std::errc::bad_address);
    auto in = rt->state(m.page(3));
    REQUIRE(in.ok());
    CHECK(*in != PageState::device);
    CHECK(*in != PageState::migrating);
}
