// Faults taken by the kernel on the application's behalf (copy_to_user and
// copy_from_user in read(2)/write(2)) are served like user faults: this is
// why uhmm never opens its userfaultfd with UFFD_USER_MODE_ONLY.
#include <catch2/catch.hpp>

#include <sys/mman.h>

#include <vector>

#include "fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

TEST_CASE("read(2) from a file into a missing registered page is served") {
    Mapping m(4 * kPage);
    Served s(open_or_die());
    REQUIRE(s.u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    REQUIRE(s.start());
    auto& h = s.h;

    Fd file(::memfd_create("uhmm-test", MFD_CLOEXEC));
    REQUIRE(file);
    std::vector<char> content(2 * kPage);
    for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>('a' + i % 26);
    REQUIRE(::pwrite(file.get(), content.data(), content.size(), 0) == static_cast<ssize_t>(content.size()));

    // Starts mid-page: the part of page 1 before the read keeps the pattern.
    const ssize_t n = ::pread(file.get(), m.page(1) + 100, content.size(), 0);
    REQUIRE(n == static_cast<ssize_t>(content.size()));
    CHECK(h.missing_faults.load() >= 1);
    CHECK(std::memcmp(m.page(1) + 100, content.data(), content.size()) == 0);
    CHECK(first_mismatch(m.page(1), 100) == 100);
}

TEST_CASE("write(2) from a missing registered page writes the served data") {
    Mapping m(2 * kPage);
    Served s(open_or_die());
    REQUIRE(s.u.register_range(m.data(), m.size(), uffd::Mode::missing).ok());
    REQUIRE(s.start());
    auto& h = s.h;

    Fd file(::memfd_create("uhmm-test", MFD_CLOEXEC));
    REQUIRE(::write(file.get(), m.data(), m.size()) == static_cast<ssize_t>(m.size()));
    CHECK(h.missing_faults.load() == 2);
    std::vector<std::byte> back(m.size());
    REQUIRE(::pread(file.get(), back.data(), back.size(), 0) == static_cast<ssize_t>(back.size()));
    const auto base = reinterpret_cast<std::uintptr_t>(m.data());
    for (std::size_t i = 0; i < back.size(); ++i) REQUIRE(back[i] == std::byte{pattern_byte(base + i)});
}
