// The hugepage backend on the kernel's real 2 MiB pool: reserving as root,
// using the pages, growing, giving them back, and falling back when the pool
// is empty or reserving is refused. Needs root (the binary exits 77 without
// it); every case restores nr_hugepages to what it found.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <fstream>
#include <vector>

#include "arena_util.hpp"
#include "skip.hpp"

using namespace uhmm::devmem;
using uhmm::devmem::test::make_arena;

namespace {

const std::string kPool = "/sys/kernel/mm/hugepages/hugepages-2048kB";
int token;

long read_pool(const std::string& name) {
    std::ifstream in(kPool + "/" + name);
    long v = -1;
    in >> v;
    return v;
}

long available() { return read_pool("free_hugepages") - read_pool("resv_hugepages"); }

// Puts nr_hugepages back as it was when the case began.
class PoolRestore {
public:
    PoolRestore() : before_(read_pool("nr_hugepages")) { REQUIRE(before_ >= 0); }
    ~PoolRestore() { std::ofstream(kPool + "/nr_hugepages") << before_ << "\n"; }
    long before() const { return before_; }

private:
    long before_;
};

ArenaSpec spec_for(long initial_chunks, long limit_chunks, bool reserve) {
    ArenaSpec spec;
    spec.backend = Backend::hugepage;
    spec.initial = static_cast<std::size_t>(initial_chunks) * kChunkSize;
    spec.size = static_cast<std::size_t>(limit_chunks) * kChunkSize;
    spec.reserve = reserve;
    return spec;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

std::optional<std::string> uhmm_test_skip_reason() {
    if (::geteuid() != 0) return "reserving huge pages needs root (writes " + kPool + "/nr_hugepages)";
    if (::access((kPool + "/nr_hugepages").c_str(), W_OK) != 0) return kPool + "/nr_hugepages is not writable here";
    const int fd = ::memfd_create("probe", MFD_HUGETLB);
    if (fd < 0) return std::string("memfd_create(MFD_HUGETLB) fails here: ") + std::strerror(errno);
    ::close(fd);
    return std::nullopt;
}

TEST_CASE("with arena_reserve a hugepage arena reserves huge pages as root, uses them and gives them back") {
    PoolRestore restore;
    const long need = available() + 2;   // more than the pool has free: it must reserve
    {
        auto arena = make_arena(spec_for(need, need + 1, true));
        const auto v = arena->view();
        CHECK(v.kind == ArenaKind::hugetlb);
        CHECK(contains(arena->describe(), "hugetlb memfd (2 MiB pages); reserved"));
        CHECK(read_pool("nr_hugepages") >= restore.before() + 2);
        // Every byte of it is real memory: write a pattern, read it back
        // through the file (hugetlb files can be read, not written).
        for (std::size_t off = 0; off < v.size; off += kPageSize) std::memset(v.base + off, int(off / kPageSize) & 0xff, 64);
        const auto owner = arena->add_owner(&token).value();
        const auto page = arena->alloc(owner).value();
        std::vector<unsigned char> back(64);
        REQUIRE(::pread(v.fd, back.data(), back.size(), static_cast<off_t>(ArenaView::offset_of(page))) == 64);
        CHECK(back[0] == (page & 0xff));
        REQUIRE_FALSE(arena->put(page));
    }
    CHECK(read_pool("nr_hugepages") == restore.before());
}

TEST_CASE("a growing hugepage arena with arena_reserve reserves a huge page per new chunk") {
    PoolRestore restore;
    const long start = available() + 1;
    {
        auto arena = make_arena(spec_for(start, start + 2, true));
        const long reserved = read_pool("nr_hugepages");
        const auto owner = arena->add_owner(&token).value();
        std::vector<PageIndex> pages;
        for (std::size_t i = 0; i < static_cast<std::size_t>(start) * kPagesPerChunk + 1; ++i) {
            pages.push_back(arena->alloc(owner).value());
        }
        CHECK(arena->stats().chunks == static_cast<std::size_t>(start) + 1);
        CHECK(read_pool("nr_hugepages") == reserved + 1);
        std::memset(arena->address(pages.back()), 7, kPageSize);
        for (const PageIndex p : pages) REQUIRE_FALSE(arena->put(p));
    }
    CHECK(read_pool("nr_hugepages") == restore.before());
}

TEST_CASE("without arena_reserve a hugepage arena uses huge pages already free in the pool") {
    PoolRestore restore;
    std::ofstream(kPool + "/nr_hugepages") << restore.before() + 2 << "\n";
    REQUIRE(available() >= 2);
    {
        auto arena = make_arena(spec_for(2, 4, false));
        CHECK(arena->view().kind == ArenaKind::hugetlb);
        CHECK_FALSE(contains(arena->describe(), "reserved"));
    }
    CHECK(read_pool("nr_hugepages") == restore.before() + 2);   // not ours to give back
}

TEST_CASE("without arena_reserve and without free huge pages a hugepage arena falls back, leaving the pool alone") {
    PoolRestore restore;
    const long need = available() + 1;
    auto arena = make_arena(spec_for(need, need, false));
    CHECK(arena->view().kind == ArenaKind::memfd);
    CHECK(contains(arena->describe(), "arena_reserve=on lets the runtime reserve them as root"));
    CHECK(read_pool("nr_hugepages") == restore.before());
}

TEST_CASE("a hugepage arena whose process may not reserve falls back with Permission denied") {
    PoolRestore restore;
    const long need = available() + 1;
    // A child that is no longer root asks to reserve.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(2);
        std::string why;
        auto arena = Arena::create(spec_for(need, need, true), &why);
        if (!arena) ::_exit(3);
        const auto text = (*arena)->describe();
        const bool ok = (*arena)->view().kind == ArenaKind::memfd &&
                        contains(text, "reserving more failed: writing " + kPool + "/nr_hugepages: Permission denied");
        ::_exit(ok ? 0 : 4);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(read_pool("nr_hugepages") == restore.before());
}

TEST_CASE("a hugepage arena whose pool runs dry as it grows says so and never opens a hole in its address space") {
    PoolRestore restore;
    // Exactly one free huge page: the arena's first chunk takes it, and every
    // later growth finds the pool empty.
    std::ofstream(kPool + "/nr_hugepages") << restore.before() - available() + 1 << "\n";
    REQUIRE(available() == 1);
    auto arena = make_arena(spec_for(1, 8, false));
    REQUIRE(arena->view().kind == ArenaKind::hugetlb);
    std::byte* const next_slot = arena->view().base + kChunkSize;

    // Another thread maps 2 MiB asking for the address of the next chunk's
    // slot, as any mmap may land in a hole. The kernel gives it that address
    // only if the slot were ever unmapped (a growth that replaced it and then
    // failed): the old MAP_FIXED growth did, and restoring the reservation
    // then wiped out whatever had landed there.
    std::atomic<bool> stop{false};
    std::atomic<long> landed{0}, tries{0};
    std::thread racer([&] {
        while (!stop.load()) {
            void* p = ::mmap(next_slot, kChunkSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) continue;
            if (p == next_slot) landed.fetch_add(1);
            ::munmap(p, kChunkSize);
            tries.fetch_add(1);
        }
    });
    const auto owner = arena->add_owner(&token).value();
    std::vector<PageIndex> pages;
    std::error_code last;
    for (int attempt = 0; attempt < 3000; ++attempt) {
        auto page = arena->alloc(owner);
        if (page) {
            pages.push_back(*page);
        } else {
            last = page.error();
        }
    }
    stop.store(true);
    racer.join();
    INFO("racer mapped " << tries.load() << " times; allocation said: " << last.message());
    CHECK(landed.load() == 0);
    CHECK(pages.size() == kChunkSize / kPageSize);   // the first chunk, and nothing more
    CHECK(last == std::errc::not_enough_memory);
    CHECK(last == Errc::pool_empty);
    CHECK(contains(last.message(), "huge page"));
    CHECK(arena->stats().chunks == 1);
    // The first chunk's pages still work.
    for (const PageIndex p : pages) {
        std::memset(arena->address(p), 0x5a, kPageSize);
        REQUIRE(arena->address(p)[kPageSize - 1] == std::byte{0x5a});
    }
    for (const PageIndex p : pages) REQUIRE_FALSE(arena->put(p));
}
