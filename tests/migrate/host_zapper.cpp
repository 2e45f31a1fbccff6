// HostZapper: host pages taken out of registered memory with UFFDIO_MOVE, no
// Remove event sent, refusals reported at the page that was refused. Exits 77
// without userfaultfd or without UFFDIO_MOVE (Linux < 6.8).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include <uhmm/uffd.hpp>

#include "migrate/host_zapper.hpp"
#include "held_child.hpp"
#include "skip.hpp"

using uhmm::migrate::HostZapper;

namespace {

constexpr std::size_t kPage = 4096;

// A private anonymous mapping, registered (MISSING + WP) with a userfaultfd
// that asks for Remove events, as the runtime's managed memory is. Nothing
// reads that fd: a DONTNEED of the range would block, and a touch of a
// zapped page would too, so the tests look through pagemap only.
struct Registered {
    std::size_t len;
    std::byte* p = nullptr;
    std::optional<uhmm::uffd::Uffd> uffd;

    explicit Registered(std::size_t pages, int prot = PROT_READ | PROT_WRITE) : len(pages * kPage) {
        void* m = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(m != MAP_FAILED);
        p = static_cast<std::byte*>(m);
        (void)::madvise(p, len, MADV_NOHUGEPAGE);
        for (std::size_t i = 0; i < pages; ++i) std::memset(p + i * kPage, static_cast<int>(i + 1), kPage);
        if (prot != (PROT_READ | PROT_WRITE)) REQUIRE(::mprotect(p, len, prot) == 0);
        auto u = uhmm::uffd::Uffd::open({.wanted = uhmm::uffd::feature::event_remove |
                                                   uhmm::uffd::feature::pagefault_flag_wp});
        REQUIRE(u.ok());
        uffd.emplace(std::move(*u));
        REQUIRE(uffd->register_range(p, len, uhmm::uffd::missing).ok());
    }
    ~Registered() {
        if (uffd) (void)uffd->unregister_range(p, len);
        ::munmap(p, len);
    }
    std::uintptr_t at(std::size_t page) const { return reinterpret_cast<std::uintptr_t>(p) + page * kPage; }
};

// Which pages of [p, p+pages) the CPU page table maps.
std::vector<bool> present(const void* p, std::size_t pages) {
    std::vector<bool> out(pages);
    const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    std::vector<std::uint64_t> e(pages);
    const auto off = static_cast<off_t>(reinterpret_cast<std::uintptr_t>(p) / kPage * 8);
    REQUIRE(::pread(fd, e.data(), pages * 8, off) == static_cast<ssize_t>(pages * 8));
    ::close(fd);
    for (std::size_t i = 0; i < pages; ++i) out[i] = (e[i] >> 63) & 1;
    return out;
}

std::size_t count(const std::vector<bool>& v) { return static_cast<std::size_t>(std::count(v.begin(), v.end(), true)); }

}  // namespace

std::optional<std::string> uhmm_test_skip_reason() {
    const auto& probe = uhmm::uffd::probe();
    if (!probe.available) return "no userfaultfd: " + probe.reason;
    std::string why;
    if (!HostZapper::create(&why)) return why;
    return std::nullopt;
}

TEST_CASE("zap: present pages go, holes are skipped, and no Remove event is sent") {
    auto z = HostZapper::create();
    REQUIRE(z);
    constexpr std::size_t pages = 600;   // more than one 2 MiB step
    Registered r(pages);
    // Holes: every third page dropped before registration's events matter
    // (the fd has no reader yet, so drop them with the range unregistered).
    REQUIRE(!r.uffd->unregister_range(r.p, r.len));
    for (std::size_t i = 0; i < pages; i += 3) REQUIRE(::madvise(r.p + i * kPage, kPage, MADV_DONTNEED) == 0);
    REQUIRE(r.uffd->register_range(r.p, r.len, uhmm::uffd::missing).ok());
    CHECK(count(present(r.p, pages)) == pages - (pages + 2) / 3);

    const auto out = z->zap(r.at(0), r.len);
    CHECK(out.error == 0);
    CHECK(out.bytes == r.len);
    CHECK(count(present(r.p, pages)) == 0);
    auto events = r.uffd->read_events();
    REQUIRE(events.ok());
    CHECK(events->empty());
}

TEST_CASE("zap: a run across two VMAs is zapped whole") {
    auto z = HostZapper::create();
    REQUIRE(z);
    constexpr std::size_t pages = 64;
    Registered r(pages);
    // Different flags on the second half split the mapping in two VMAs.
    REQUIRE(::madvise(r.p + 32 * kPage, 32 * kPage, MADV_DONTFORK) == 0);
    const auto out = z->zap(r.at(0), r.len);
    CHECK(out.error == 0);
    CHECK(out.bytes == r.len);
    CHECK(count(present(r.p, pages)) == 0);
}

TEST_CASE("zap: a page shared with a fork()ed child is refused with EBUSY, and where") {
    auto z = HostZapper::create();
    REQUIRE(z);
    constexpr std::size_t pages = 8;
    Registered r(pages);
    uhmm::test::HeldChild child([] { return true; });   // keeps the pages shared until released
    REQUIRE(child.started());
    // The parent writes pages 0..3: copy-on-write (the kernel's, the pages
    // are present) makes them its own again.
    for (std::size_t i = 0; i < 4; ++i) r.p[i * kPage] = std::byte{0x5a};

    const auto out = z->zap(r.at(0), r.len);
    CHECK(out.error == EBUSY);
    CHECK(out.bytes == 4 * kPage);
    const auto now = present(r.p, pages);
    CHECK(count(now) == 4);
    CHECK(now[4]);
    CHECK(r.p[4 * kPage] == std::byte{5});   // the refused page keeps its data

    CHECK(child.wait() == 0);
}

TEST_CASE("zap: a read-only mapping is refused with EINVAL, its pages kept") {
    auto z = HostZapper::create();
    REQUIRE(z);
    constexpr std::size_t pages = 4;
    Registered r(pages, PROT_READ);
    const auto out = z->zap(r.at(0), r.len);
    CHECK(out.error == EINVAL);
    CHECK(out.bytes == 0);
    CHECK(count(present(r.p, pages)) == pages);
    CHECK(r.p[2 * kPage] == std::byte{3});
}

TEST_CASE("zap: 8 threads at once, more than there are scratch slots' worth of work") {
    auto z = HostZapper::create();
    REQUIRE(z);
    constexpr std::size_t threads = 8, pages_each = 1024;
    Registered r(threads * pages_each);
    std::atomic<std::size_t> errors{0};
    std::vector<std::thread> ts;
    for (std::size_t t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            // Each thread zaps its part in 4-page runs: many acquire/release.
            for (std::size_t i = 0; i < pages_each; i += 4) {
                const auto out = z->zap(r.at(t * pages_each + i), 4 * kPage);
                if (out.error || out.bytes != 4 * kPage) errors.fetch_add(1);
            }
        });
    }
    for (auto& t : ts) t.join();
    CHECK(errors.load() == 0);
    CHECK(count(present(r.p, threads * pages_each)) == 0);
}
