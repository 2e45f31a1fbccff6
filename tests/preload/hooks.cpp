// The preload library's hooks, from inside a program it runs: this test
// binary is itself started with LD_PRELOAD=libuhmm_preload.so and a
// UHMM_CONF with policy=chaos (tests/preload/meson.build). What the program
// sees: big blocks and mappings are managed (their VMAs carry userfaultfd
// registration), small ones are glibc's, every allocator contract holds,
// and data survives pages leaving for the device and coming back.
#include <catch2/catch.hpp>

#include <malloc.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "skip.hpp"

using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() {
    if (auto why = userfaultfd_unavailable()) return why;
    if (!std::getenv("LD_PRELOAD")) return std::string("not started under libuhmm_preload.so (run it through meson)");
    return std::nullopt;
}

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kMinRange = 256 * 1024;   // tests/preload/meson.build's min_range

std::uintptr_t addr_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

// The VmFlags of the mapping holding `p`, from /proc/self/smaps ("" if none).
std::string vm_flags(const void* p) {
    std::ifstream in("/proc/self/smaps");
    std::string line;
    bool inside = false;
    while (std::getline(in, line)) {
        unsigned long a = 0, b = 0;
        if (std::sscanf(line.c_str(), "%lx-%lx ", &a, &b) == 2 && line.find('-') < line.find(' ')) {
            inside = a <= addr_of(p) && addr_of(p) < b;
            continue;
        }
        if (inside && line.rfind("VmFlags:", 0) == 0) return line.substr(8) + " ";
    }
    return "";
}

// Registered with a userfaultfd for missing faults: the runtime manages it.
bool managed(const void* p) { return vm_flags(p).find(" um ") != std::string::npos; }

// Pages of [p, p+len) not in the CPU page table (a managed page on the
// device is not: the CPU touch that needs it brings it home).
std::size_t absent_pages(const void* p, std::size_t len) {
    const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    std::vector<std::uint64_t> e(len / kPage);
    const auto n = ::pread(fd, e.data(), e.size() * 8, static_cast<off_t>(addr_of(p) / kPage * 8));
    ::close(fd);
    std::size_t absent = 0;
    for (std::size_t i = 0; n > 0 && i < static_cast<std::size_t>(n) / 8; ++i) absent += !(e[i] >> 63);
    return absent;
}

// Word i of a buffer holds word(i, salt); `from` is the first word's index.
std::uint32_t word(std::size_t i, std::uint32_t salt) { return static_cast<std::uint32_t>(i * 2654435761u) ^ salt; }

void fill(void* p, std::size_t len, std::uint32_t salt) {
    auto* w = static_cast<std::uint32_t*>(p);
    for (std::size_t i = 0; i < len / 4; ++i) w[i] = word(i, salt);
}

bool check(const void* p, std::size_t len, std::uint32_t salt, std::size_t from = 0) {
    const auto* w = static_cast<const std::uint32_t*>(p);
    for (std::size_t i = 0; i < len / 4; ++i)
        if (w[i] != word(from + i, salt)) return false;
    return true;
}

bool all_zero(const void* p, std::size_t len) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < len; ++i)
        if (b[i]) return false;
    return true;
}

}  // namespace

TEST_CASE("a block of min_range or more is managed and page-aligned; a smaller one is glibc's") {
    void* big = std::malloc(kMinRange);
    void* small = std::malloc(100);
    REQUIRE(big);
    REQUIRE(small);
    CHECK(addr_of(big) % kPage == 0);
    CHECK(managed(big));
    CHECK(!managed(small));
    fill(big, kMinRange, 1);
    std::memset(small, 7, 100);
    CHECK(check(big, kMinRange, 1));
    CHECK(malloc_usable_size(big) >= kMinRange);
    CHECK(malloc_usable_size(small) >= 100);
    std::free(big);
    std::free(small);
    std::free(nullptr);
}

TEST_CASE("calloc of a big block reads zero; realloc keeps the contents as blocks grow, shrink and change hands") {
    auto* p = static_cast<unsigned char*>(std::calloc(512, 1024));
    REQUIRE(p);
    CHECK(managed(p));
    CHECK(all_zero(p, 512 * 1024));
    fill(p, 512 * 1024, 2);
    // Grows (mremap into a bigger managed block).
    auto* q = static_cast<unsigned char*>(std::realloc(p, 4u << 20));
    REQUIRE(q);
    CHECK(managed(q));
    CHECK(check(q, 512 * 1024, 2));
    fill(q, 4u << 20, 3);
    // Shrinks in place, contents kept.
    auto* r = static_cast<unsigned char*>(std::realloc(q, 300 * 1024));
    REQUIRE(r == q);
    CHECK(check(r, 300 * 1024, 3));
    // A small glibc block grown past min_range becomes managed, contents kept.
    auto* s = static_cast<unsigned char*>(std::malloc(1000));
    std::memset(s, 0x5a, 1000);
    auto* t = static_cast<unsigned char*>(std::realloc(s, 1u << 20));
    REQUIRE(t);
    CHECK(managed(t));
    for (int i = 0; i < 1000; ++i) REQUIRE(t[i] == 0x5a);
    // A managed block shrunk below min_range by a realloc stays usable.
    auto* u = static_cast<unsigned char*>(std::realloc(t, 10));
    REQUIRE(u);
    CHECK(u[9] == 0x5a);
    std::free(u);
    std::free(r);
    CHECK(std::realloc(std::malloc(kMinRange), 0) == nullptr);   // frees
    // calloc's overflow check.
    errno = 0;
    volatile std::size_t huge = ~std::size_t{0} / 2;   // volatile: the compiler would refuse to build the call
    CHECK(std::calloc(huge, 4) == nullptr);
    CHECK(errno == ENOMEM);
}

TEST_CASE("aligned allocations keep their alignment, managed or not; bad alignments are EINVAL") {
    void* p = nullptr;
    REQUIRE(::posix_memalign(&p, 2u << 20, 3u << 20) == 0);
    CHECK(addr_of(p) % (2u << 20) == 0);
    CHECK(managed(p));
    fill(p, 3u << 20, 4);
    CHECK(check(p, 3u << 20, 4));
    std::free(p);
    void* a = std::aligned_alloc(64, kMinRange);
    REQUIRE(a);
    CHECK(addr_of(a) % 64 == 0);
    CHECK(managed(a));
    std::free(a);
    void* m = ::memalign(4096, 8192);
    REQUIRE(m);
    CHECK(addr_of(m) % 4096 == 0);
    CHECK(!managed(m));
    std::free(m);
    void* v = ::valloc(kMinRange);
    CHECK(addr_of(v) % kPage == 0);
    std::free(v);
    void* out = &out;
    CHECK(::posix_memalign(&out, 3, 100) == EINVAL);
    CHECK(::posix_memalign(&out, 0, 100) == EINVAL);
}

TEST_CASE("private anonymous read-write mmaps of min_range are managed; shared, small and read-only ones are not") {
    const std::size_t len = 1u << 20;
    void* priv = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void* shared = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    void* small = ::mmap(nullptr, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void* ro = ::mmap(nullptr, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(priv != MAP_FAILED);
    REQUIRE(shared != MAP_FAILED);
    REQUIRE(small != MAP_FAILED);
    REQUIRE(ro != MAP_FAILED);
    CHECK(managed(priv));
    CHECK(!managed(shared));
    CHECK(!managed(small));
    CHECK(!managed(ro));
    fill(priv, len, 5);
    CHECK(check(priv, len, 5));
    // MADV_HUGEPAGE is declined on managed memory (it stays 4 KiB pages) and
    // passed on elsewhere.
    CHECK(::madvise(priv, len, MADV_HUGEPAGE) == 0);
    CHECK(vm_flags(priv).find(" hg ") == std::string::npos);
    CHECK(::madvise(shared, len, MADV_HUGEPAGE) == 0);
    // mprotect (through the runtime) really protects.
    REQUIRE(::mprotect(priv, len, PROT_READ) == 0);
    CHECK(vm_flags(priv).find(" wr ") == std::string::npos);
    REQUIRE(::mprotect(priv, len, PROT_READ | PROT_WRITE) == 0);
    CHECK(check(priv, len, 5));
    // madvise(DONTNEED): reads zero afterwards.
    REQUIRE(::madvise(priv, len / 2, MADV_DONTNEED) == 0);
    CHECK(all_zero(priv, len / 2));
    CHECK(check(static_cast<char*>(priv) + len / 2, len / 2, 5, len / 8));   // the other half kept its data
    for (void* m : {priv, shared, small, ro}) CHECK(::munmap(m, m == small ? 64 * 1024 : len) == 0);
}

TEST_CASE("mremap that grows a managed mapping: the data moves with it and the new tail is managed too") {
    const std::size_t len = 1u << 20;
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    fill(p, len, 6);
    void* q = ::mremap(p, len, 4 * len, MREMAP_MAYMOVE);
    REQUIRE(q != MAP_FAILED);
    CHECK(check(q, len, 6));
    CHECK(managed(q));
    CHECK(managed(static_cast<char*>(q) + 3 * len));
    CHECK(all_zero(static_cast<char*>(q) + len, 3 * len));
    fill(q, 4 * len, 7);
    CHECK(check(q, 4 * len, 7));
    CHECK(::munmap(q, 4 * len) == 0);
}

TEST_CASE("under policy=chaos pages leave for the device and come back; the data never changes") {
    const std::size_t len = 32u << 20;
    void* p = std::malloc(len);
    REQUIRE(p);
    REQUIRE(managed(p));
    fill(p, len, 8);
    std::size_t most_absent = 0;
    for (int round = 0; round < 30; ++round) {
        std::this_thread::sleep_for(std::chrono::milliseconds(15));
        most_absent = std::max(most_absent, absent_pages(p, len));
        REQUIRE(check(p, len, 8));   // every page comes home on the read
    }
    INFO("most pages away at once: " << most_absent);
    CHECK(most_absent > 0);
    std::free(p);
}

TEST_CASE("fork: the child sees the parent's blocks, and frees and allocates safely in it") {
    const std::size_t len = 4u << 20;
    void* p = std::malloc(len);
    REQUIRE(p);
    fill(p, len, 9);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        bool ok = check(p, len, 9);
        std::free(p);                    // plain memory here: unmapped
        void* q = std::malloc(len);      // glibc's in the child
        ok = ok && q;
        if (q) fill(q, len, 10), ok = ok && check(q, len, 10), std::free(q);
        ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(check(p, len, 9));
    std::free(p);
}

TEST_CASE("threads allocate, grow, check and free big blocks at once") {
    constexpr int threads = 4, iterations = 60;
    std::atomic<int> bad{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([t, &bad] {
            std::mt19937 rng(static_cast<unsigned>(t));
            for (int i = 0; i < iterations; ++i) {
                const std::size_t n = kMinRange + (rng() % (2u << 20)) / kPage * kPage;
                const auto salt = static_cast<std::uint32_t>(t * 1000 + i);
                void* p = std::malloc(n);
                if (!p) {
                    ++bad;
                    continue;
                }
                fill(p, n, salt);
                void* q = std::realloc(p, 2 * n);
                if (!q || !check(q, n, salt)) ++bad;
                std::free(q);
            }
        });
    }
    for (auto& t : ts) t.join();
    CHECK(bad == 0);
}
