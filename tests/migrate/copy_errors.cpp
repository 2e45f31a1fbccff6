// Errors are reported per op and summarised in the fence; one bad op never
// spoils its neighbours, and nothing is silently dropped.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>

#include <string>
#include <vector>

#include "arena_fixture.hpp"
#include "migrate/guarded_copy.hpp"

using namespace uhmm;
using namespace uhmm::test;
using migrate::CopyOp;
using migrate::Direction;
using migrate::EngineKind;

TEST_CASE("an op past the arena's end fails with ERANGE and leaves its neighbours done") {
    const auto kind = GENERATE(EngineKind::uring, EngineKind::memcpy);
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    auto e = migrate::make_copy_engine(kind, arena->view);
    REQUIRE(e.ok());
    auto host = map_anon(3 * kPage);
    fill(host.bytes(), 21);
    const std::vector<CopyOp> ops{
        {host.data(), 0, kPage},
        {host.data() + kPage, (1u << 20) - kPage / 2, kPage},   // straddles the end
        {host.data() + 2 * kPage, (1u << 20) - kPage, kPage},   // the last page: fine
    };
    auto fence = (*e)->submit(Direction::to_device, ops);
    CHECK(fence.wait() == std::errc::result_out_of_range);
    CHECK(fence.failed() == 1);
    CHECK(fence.results()[0].bytes == kPage);
    CHECK_FALSE(fence.results()[0].error);
    CHECK(fence.results()[1].error == std::errc::result_out_of_range);
    CHECK(fence.results()[1].bytes == 0);
    CHECK(fence.results()[2].bytes == kPage);
    CHECK(std::memcmp(arena->map.data(), host.data(), kPage) == 0);
    CHECK(std::memcmp(arena->map.data() + (1u << 20) - kPage, host.data() + 2 * kPage, kPage) == 0);
}

TEST_CASE("a zero-length or null op fails with EINVAL") {
    const auto kind = GENERATE(EngineKind::uring, EngineKind::memcpy);
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    auto e = migrate::make_copy_engine(kind, arena->view);
    REQUIRE(e.ok());
    auto host = map_anon(kPage);
    const std::vector<CopyOp> ops{{host.data(), 0, 0}, {nullptr, 0, kPage}};
    auto fence = (*e)->submit(Direction::to_host, ops);
    CHECK(fence.wait() == std::errc::invalid_argument);
    CHECK(fence.failed() == 2);
}

namespace {
void programs_own_handler(int) {}

// A SIGSEGV handler of the program's own for the scope's life: the runtime
// then leaves fault signals alone and copies host memory only through the
// kernel (io_uring WRITE into a shmem arena), the path checked below.
struct ProgramHandlesSegv {
    struct sigaction old {};
    ProgramHandlesSegv() {
        struct sigaction sa {};
        sa.sa_handler = programs_own_handler;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGSEGV, &sa, &old);
    }
    ~ProgramHandlesSegv() { ::sigaction(SIGSEGV, &old, nullptr); }
};
}  // namespace

TEST_CASE("io_uring WRITE into an arena file opened read-only fails per op with EBADF") {
    ProgramHandlesSegv kernel_copies_only;
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    const std::string path = "/proc/self/fd/" + std::to_string(arena->fd.get());
    Fd ro(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(ro);
    auto view = arena->view;
    view.fd = ro.get();
    auto e = migrate::make_copy_engine(EngineKind::uring, view);
    REQUIRE(e.ok());
    auto host = map_anon(2 * kPage);
    const std::vector<CopyOp> ops{{host.data(), 0, kPage}, {host.data() + kPage, kPage, kPage}};
    auto fence = (*e)->submit(Direction::to_device, ops);
    CHECK(fence.wait() == std::errc::bad_file_descriptor);
    CHECK(fence.failed() == 2);
    // Reads through the same descriptor still work.
    fill(arena->map.bytes().subspan(0, kPage), 22);
    auto back = (*e)->submit(Direction::to_host, {ops.data(), 1});
    CHECK_FALSE(back.wait());
    CHECK(mismatch(host.bytes().subspan(0, kPage), 22) == -1);
}

TEST_CASE("a host page that cannot be read is reported as EFAULT for that op alone") {
    // memcpy too: its copies are guarded (lib/migrate/guarded_copy.hpp),
    // except where a sanitizer's runtime owns SIGSEGV (then memcpy crashes,
    // as documented, and only io_uring is checked).
    const auto kind = GENERATE(EngineKind::uring, EngineKind::memcpy);
    if (kind == EngineKind::memcpy && !migrate::detail::guarded_copy_ready()) {
        WARN("SIGSEGV has a handler in this process (a sanitizer's): no guarded copies to check");
        return;
    }
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    auto e = migrate::make_copy_engine(kind, arena->view);
    REQUIRE(e.ok());
    auto host = map_anon(3 * kPage);
    fill(host.bytes(), 23);
    // A hole in the middle. PROT_NONE rather than munmap: an unmapped hole could
    // be reused by another mapping (ASan's, a thread stack) that the
    // Mapping's destructor would then unmap.
    REQUIRE(::mprotect(host.data() + kPage, kPage, PROT_NONE) == 0);
    const std::vector<CopyOp> ops{
        {host.data(), 0, kPage},
        {host.data() + kPage, kPage, kPage},          // wholly in the hole
        {host.data(), 4 * kPage, 2 * kPage},          // first page readable, second not
        {host.data() + 2 * kPage, 8 * kPage, kPage},
    };
    auto fence = (*e)->submit(Direction::to_device, ops);
    CHECK(fence.wait() == std::errc::bad_address);
    CHECK_FALSE(fence.results()[0].error);
    CHECK(fence.results()[1].error == std::errc::bad_address);
    CHECK(fence.results()[1].bytes == 0);
    // The short write of the mapped first page counts; its remainder faults.
    CHECK(fence.results()[2].error == std::errc::bad_address);
    CHECK(fence.results()[2].bytes == kPage);
    CHECK_FALSE(fence.results()[3].error);
    CHECK(std::memcmp(arena->map.data() + 8 * kPage, host.data() + 2 * kPage, kPage) == 0);
    CHECK(std::memcmp(arena->map.data() + 4 * kPage, host.data(), kPage) == 0);
}

TEST_CASE("a read past the end of a file shorter than the view reports ENXIO with the bytes it got") {
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    fill(arena->map.bytes(), 24);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    // Shrink the file under the engine: the view (and the engine) still say 1 MiB.
    REQUIRE(::ftruncate(arena->fd.get(), 64 * 1024) == 0);
    auto host = map_anon(2 * kPage);
    const std::vector<CopyOp> ops{
        {host.data(), 64 * 1024 - kPage, 2 * kPage},   // half inside: short read, then EOF
    };
    auto fence = (*e)->submit(Direction::to_host, ops);
    CHECK(fence.wait() == std::errc::no_such_device_or_address);
    CHECK(fence.results()[0].bytes == kPage);
    CHECK(std::memcmp(host.data(), arena->map.data() + 64 * 1024 - kPage, kPage) == 0);
}

TEST_CASE("a fault inside a run of contiguous pages fails that page alone") {
    // Contiguous host pages to contiguous device pages travel as one request;
    // an error must still land on the page that caused it, not its neighbours.
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    constexpr std::size_t n = 8;
    auto host = map_anon(n * kPage);
    fill(host.bytes(), 25);
    REQUIRE(::mprotect(host.data() + 5 * kPage, kPage, PROT_NONE) == 0);   // see above
    std::vector<CopyOp> ops;
    for (std::size_t i = 0; i < n; ++i) ops.push_back({host.data() + i * kPage, (16 + i) * kPage, kPage});
    auto fence = (*e)->submit(Direction::to_device, ops);
    CHECK(fence.wait() == std::errc::bad_address);
    CHECK(fence.failed() == 1);
    for (std::size_t i = 0; i < n; ++i) {
        INFO("op " << i);
        CHECK(fence.results()[i].bytes == (i == 5 ? 0 : kPage));
        CHECK(static_cast<bool>(fence.results()[i].error) == (i == 5));
        if (i != 5) CHECK(std::memcmp(arena->map.data() + (16 + i) * kPage, host.data() + i * kPage, kPage) == 0);
    }
}

TEST_CASE("a run of pages across the end of a shorter file fails only the pages past it") {
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    fill(arena->map.bytes(), 26);
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view);
    REQUIRE(e.ok());
    REQUIRE(::ftruncate(arena->fd.get(), 64 * 1024) == 0);
    auto host = map_anon(4 * kPage);
    std::vector<CopyOp> ops;
    for (std::size_t i = 0; i < 4; ++i) ops.push_back({host.data() + i * kPage, 64 * 1024 - 2 * kPage + i * kPage, kPage});
    auto fence = (*e)->submit(Direction::to_host, ops);
    CHECK(fence.wait() == std::errc::no_such_device_or_address);
    CHECK(fence.results()[0].bytes == kPage);
    CHECK(fence.results()[1].bytes == kPage);
    CHECK(fence.results()[2].error == std::errc::no_such_device_or_address);
    CHECK(fence.results()[3].error == std::errc::no_such_device_or_address);
    CHECK(std::memcmp(host.data(), arena->map.data() + 64 * 1024 - 2 * kPage, 2 * kPage) == 0);
}

TEST_CASE("the CPU-worker path reports an unreadable host page as EFAULT instead of crashing") {
    auto arena = FileArena::create(1u << 20);
    REQUIRE(arena);
    migrate::EngineOptions opts;
    opts.cpu_worker = true;
    auto e = migrate::make_copy_engine(EngineKind::uring, arena->view, opts);
    REQUIRE(e.ok());
    constexpr std::size_t n = 6;
    auto host = map_anon(n * kPage);
    fill(host.bytes(), 27);
    REQUIRE(::mprotect(host.data() + 2 * kPage, kPage, PROT_NONE) == 0);   // see above
    std::vector<CopyOp> ops;
    for (std::size_t i = 0; i < n; ++i) ops.push_back({host.data() + i * kPage, (40 - 3 * i) * kPage, kPage});
    ops.push_back({host.data() + kPage, 100 * kPage, 2 * kPage});   // readable page, then the hole
    for (auto dir : {Direction::to_device, Direction::to_host}) {
        INFO((dir == Direction::to_device ? "to_device" : "to_host"));
        auto fence = (*e)->submit(dir, ops);
        CHECK(fence.wait() == std::errc::bad_address);
        CHECK(fence.failed() == 2);
        for (std::size_t i = 0; i < n; ++i) {
            INFO("op " << i);
            CHECK(fence.results()[i].bytes == (i == 2 ? 0 : kPage));
            CHECK(static_cast<bool>(fence.results()[i].error) == (i == 2));
        }
        CHECK(fence.results()[n].error == std::errc::bad_address);
        CHECK(fence.results()[n].bytes == kPage);
    }
}
