// The backends this machine can run without privileges: memfd, numa:0, the
// hugepage fallback decisions (with a fake huge page pool, so nothing global
// changes), and cuda refusing cleanly. Real huge pages: hugepage_test.cpp;
// a real GPU: cuda_test.cpp.
#include <catch2/catch.hpp>

#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "arena_util.hpp"
#include "uhmm_build_config.hpp"

using namespace uhmm::devmem;
using uhmm::devmem::test::make_arena;
using uhmm::devmem::test::memfd_spec;
namespace fs = std::filesystem;

namespace {

int token;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Pages of [base, base + len) resident in memory, by mincore.
std::size_t resident_pages(std::byte* base, std::size_t len) {
    std::vector<unsigned char> vec(len / kPageSize);
    REQUIRE(::mincore(base, len, vec.data()) == 0);
    std::size_t n = 0;
    for (unsigned char v : vec) n += v & 1;
    return n;
}

// A directory that looks like /sys/kernel/mm/hugepages/hugepages-2048kB.
class FakePool {
public:
    explicit FakePool(long total, long free) {
        char tmpl[] = "/tmp/uhmm-fake-pool-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        dir_ = tmpl;
        write("nr_hugepages", total);
        write("free_hugepages", free);
        write("resv_hugepages", 0);
    }
    ~FakePool() { fs::remove_all(dir_); }
    void write(const std::string& name, long value) const { std::ofstream(dir_ + "/" + name) << value << "\n"; }
    // Make writing nr_hugepages fail as it does for a non-root process, even
    // for root: a read-only sysctl (mode 0444) refuses everyone with EACCES.
    void refuse_writes() const {
        fs::remove(dir_ + "/nr_hugepages");
        fs::create_symlink("/proc/sys/kernel/ngroups_max", dir_ + "/nr_hugepages");
    }
    const std::string& dir() const { return dir_; }

private:
    std::string dir_;
};

ArenaSpec hugepage_spec(const std::string& pool, bool reserve) {
    ArenaSpec spec;
    spec.backend = Backend::hugepage;
    spec.size = 4 << 20;
    spec.reserve = reserve;
    spec.hugetlb_pool = pool;
    return spec;
}

std::string shmem_thp_setting() {
    for (const char* path : {"/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled",
                             "/sys/kernel/mm/transparent_hugepage/shmem_enabled"}) {
        std::ifstream in(path);
        std::string line;
        if (!std::getline(in, line)) continue;
        const auto open = line.find('['), close = line.find(']');
        const auto value = line.substr(open + 1, close - open - 1);
        if (value != "inherit") return value;
    }
    return {};
}

}  // namespace

// ---- memfd ---------------------------------------------------------------------

TEST_CASE("a memfd arena's pages are the same bytes through its fd and its mapping") {
    auto arena = make_arena(memfd_spec(4 << 20));
    const auto owner = arena->add_owner(&token).value();
    const auto page = arena->alloc(owner).value();
    const auto v = arena->view();
    REQUIRE(v.kind == ArenaKind::memfd);
    std::memset(arena->address(page), 0xab, kPageSize);
    std::vector<unsigned char> back(kPageSize);
    REQUIRE(::pread(v.fd, back.data(), kPageSize, static_cast<off_t>(ArenaView::offset_of(page))) ==
            static_cast<ssize_t>(kPageSize));
    CHECK(back[0] == 0xab);
    CHECK(back[kPageSize - 1] == 0xab);
    const char hello[] = "written through the fd";
    REQUIRE(::pwrite(v.fd, hello, sizeof hello, static_cast<off_t>(ArenaView::offset_of(page))) ==
            static_cast<ssize_t>(sizeof hello));
    CHECK(std::memcmp(arena->address(page), hello, sizeof hello) == 0);
    CHECK(contains(arena->describe(), "shmem memfd"));
}

TEST_CASE("a memfd arena's chunks are populated when they are mapped, not on first touch") {
    auto arena = make_arena(memfd_spec(8 << 20, 4 << 20));
    const auto v = arena->view();
    CHECK(resident_pages(v.base, v.size) == v.size / kPageSize);
    REQUIRE_FALSE(arena->grow(6 << 20));
    CHECK(resident_pages(v.base, 6 << 20) == (6u << 20) / kPageSize);
    struct stat st {};
    REQUIRE(::fstat(v.fd, &st) == 0);
    CHECK(st.st_size == (6 << 20));   // the file grows with the arena
}

// ---- numa ------------------------------------------------------------------------

TEST_CASE("a numa:0 arena's pages are populated on node 0 and have no file") {
    auto spec = parse_arena_spec("numa:0", "8M", false).value();
    spec.initial = 4 << 20;
    auto arena = make_arena(spec);
    const auto v = arena->view();
    CHECK(v.kind == ArenaKind::numa);
    CHECK(v.fd == -1);
    REQUIRE(v.base != nullptr);
    CHECK(resident_pages(v.base, v.size) == v.size / kPageSize);
    // Ask the kernel where a sample of pages lives.
    std::vector<void*> pages;
    for (std::size_t off = 0; off < v.size; off += 37 * kPageSize) pages.push_back(v.base + off);
    std::vector<int> status(pages.size(), -1);
    REQUIRE(::move_pages(0, pages.size(), pages.data(), nullptr, status.data(), 0) == 0);
    for (int node : status) CHECK(node == 0);
    CHECK(contains(arena->describe(), "NUMA node 0"));
    if (numa_max_node() == 0) {
        WARN("one NUMA node here: binding to a node other than 0 (CXL/HBM) is not covered");
    }
}

TEST_CASE("a numa arena on a node that does not exist is refused with the list of nodes") {
    const int missing = numa_max_node() + 1;
    auto spec = parse_arena_spec("numa:" + std::to_string(missing), "4M", false).value();
    std::string why;
    const auto arena = Arena::create(spec, &why);
    REQUIRE_FALSE(arena.ok());
    CHECK(arena.error() == std::errc::no_such_device);
    CHECK(contains(why, "numa:" + std::to_string(missing) + ": node " + std::to_string(missing) + " does not exist"));
    CHECK(contains(why, "nodes with memory: 0"));
}

// ---- hugepage fallbacks ----------------------------------------------------------------

TEST_CASE("a hugepage arena with no free huge pages and no arena_reserve falls back to a memfd and says why") {
    FakePool pool(0, 0);
    auto arena = make_arena(hugepage_spec(pool.dir(), false));
    CHECK(arena->view().kind == ArenaKind::memfd);
    const auto text = arena->describe();
    INFO(text);
    CHECK(contains(text, "hugepage unavailable: not enough free 2 MiB huge pages (1 needed, 0 available"));
    CHECK(contains(text, "arena_reserve=on lets the runtime reserve them as root"));
    // Still a working arena.
    const auto owner = arena->add_owner(&token).value();
    const auto page = arena->alloc(owner).value();
    std::memset(arena->address(page), 1, kPageSize);
}

TEST_CASE("a hugepage arena whose reservation is refused falls back to a memfd with the error") {
    FakePool pool(0, 0);
    pool.refuse_writes();
    auto arena = make_arena(hugepage_spec(pool.dir(), true));
    CHECK(arena->view().kind == ArenaKind::memfd);
    const auto text = arena->describe();
    INFO(text);
    CHECK(contains(text, "reserving more failed: writing " + pool.dir() + "/nr_hugepages"));
    CHECK(contains(text, "Permission denied (EACCES)"));
}

TEST_CASE("a hugepage arena without a readable huge page pool falls back to a memfd") {
    auto arena = make_arena(hugepage_spec("/nonexistent/hugepages-2048kB", false));
    CHECK(arena->view().kind == ArenaKind::memfd);
    CHECK(contains(arena->describe(), "reading the 2 MiB huge page pool in /nonexistent/hugepages-2048kB"));
    CHECK(contains(arena->describe(), "ENOENT"));
}

TEST_CASE("the hugepage fallback asks for THP exactly when shmem THP can honour it") {
    FakePool pool(0, 0);
    auto arena = make_arena(hugepage_spec(pool.dir(), false));
    const auto setting = shmem_thp_setting();
    const auto text = arena->describe();
    INFO("shmem_enabled: " << setting << "; " << text);
    if (setting == "never" || setting == "deny" || setting.empty()) {
        CHECK(contains(text, "fell back to a plain memfd (shmem THP is '" + setting + "'"));
        CHECK(contains(text, "shmem memfd (4 KiB pages)"));
        WARN("shmem THP is '" << setting << "' here: the THP-advised fallback is not covered");
    } else {
        CHECK(contains(text, "fell back to a THP-advised memfd"));
        CHECK(contains(text, "MADV_HUGEPAGE"));
    }
}

// ---- cuda ----------------------------------------------------------------------------------

TEST_CASE("a cuda arena that cannot be had is refused with the reason, CUDA's text when built with it") {
    auto spec = parse_arena_spec("cuda:99", "4M", false).value();
    std::string why;
    const auto arena = Arena::create(spec, &why);
    REQUIRE_FALSE(arena.ok());
    INFO(why);
    CHECK(why.rfind("cuda:99: ", 0) == 0);
    CHECK(arena.error() != std::error_code{});
#if UHMM_HAVE_CUDA
    // Either there are GPUs and 99 is not one, or CUDA says why there are none.
    CHECK((contains(why, "no such device") || contains(why, "cudaGetDeviceCount failed: ")));
    CHECK((contains(why, "no such device") || contains(why, "(cudaError")));
#else
    CHECK(contains(why, "no CUDA support"));
#endif
}
