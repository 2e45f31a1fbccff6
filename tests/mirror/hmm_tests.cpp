// The kernel's tools/testing/selftests/mm/hmm-tests.c, ported case by case
// against SoftDevice (as hmm-tests runs against test_hmm's dmirror). Each
// case keeps the kernel's expectations (cpages, faults, data, error codes);
// where user space makes one impossible, the case says why. Buffers are
// managed by the runtime (migration needs it), made with mmap + manage() as
// the kernel tests make theirs with mmap. Cases not ported yet are listed in
// tests/mirror/README.md.
#include <catch2/catch.hpp>

#include <uhmm/soft_device.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;
using mirror::SoftDevice;
namespace snap = uhmm::mirror::snap;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

// The arena the cases run over: memfd, or what UHMM_TEST_CONF says (meson
// runs this binary a second time over the hugepage arena). The kernel's
// suite runs over both device-private and device-coherent memory alike.
std::string arena_conf() {
    const char* c = std::getenv("UHMM_TEST_CONF");
    return c && *c ? c : kMemfdConf;
}

// hmm-tests' struct hmm_buffer: the memory, and the device's own copy.
struct Buffer {
    std::size_t npages, size;
    Mapping m;
    std::vector<int> mirror;
    explicit Buffer(std::size_t pages) : npages(pages), size(pages * kPage), m(pages * kPage), mirror(size / sizeof(int)) {}
    int* ptr() const { return reinterpret_cast<int*>(m.data()); }
    std::size_t ints() const { return size / sizeof(int); }
};

std::unique_ptr<SoftDevice> device(Runtime& rt, const Buffer& b) {
    auto d = SoftDevice::create(rt, b.m.data(), b.size);
    REQUIRE(d.ok());
    return std::move(d).value();
}

// The usual start: the buffer managed, holding ptr[i] == i, a device on it,
// and (with `migrate`) the buffer moved to that device.
std::unique_ptr<SoftDevice> filled(Runtime& rt, Buffer& b, bool migrate) {
    REQUIRE(!rt.manage(b.m.data(), b.size));
    for (std::size_t i = 0; i < b.ints(); ++i) b.ptr()[i] = static_cast<int>(i);
    auto dev = device(rt, b);
    if (migrate) REQUIRE(dev->migrate_to_device(b.ptr(), b.size).ok());
    return dev;
}

// In a fork()ed child: a runtime and a SoftDevice of the child's own (the
// parent's runtime is inert there) write `data` over [addr, addr+size).
// The child's exit code: 0 when the write took one fault and every page.
int child_device_write(void* addr, std::size_t size, const std::vector<int>& data) {
    std::string why;
    auto cfg = RuntimeConfig::parse(kMemfdConf, &why);
    auto crt = Runtime::create(*cfg, &why);
    if (!crt) return 2;
    auto dev = SoftDevice::create(**crt, addr, size);
    if (!dev) return 3;
    auto r = (*dev)->write(addr, size, data.data());
    return r && r->cpages == size / kPage && r->faults == 1 ? 0 : 4;
}

// The CPU half of hmm-tests' exclusive cases: each int read back as i
// (faulting the page home) and incremented, then read again as i + 1. A
// bool, not REQUIREs: a fork()ed child runs it too.
bool cpu_increment_and_check(int* ptr, std::size_t ints) {
    for (std::size_t i = 0; i < ints; ++i)
        if (ptr[i]++ != static_cast<int>(i)) return false;
    for (std::size_t i = 0; i < ints; ++i)
        if (ptr[i] != static_cast<int>(i) + 1) return false;
    return true;
}

// 2 MiB of managed memory (2 MiB-aligned) holding ptr[i] == i, mirrored by
// a SoftDevice and, unless told otherwise, migrated by it (the setup of the
// kernel's *_fault and migrate_anon_huge_* cases).
struct Migrated2M {
    static constexpr std::size_t npages = 512, size = npages * kPage;
    Mapping m{size, size};
    std::unique_ptr<SoftDevice> dev;
    std::size_t cpages = 0;
    int* ptr() const { return reinterpret_cast<int*>(m.data()); }
    explicit Migrated2M(Runtime& rt, bool migrate = true) {
        REQUIRE(m);
        for (std::size_t i = 0; i < size / sizeof(int); ++i) ptr()[i] = static_cast<int>(i);
        REQUIRE(!rt.manage(m.data(), size));
        auto d = SoftDevice::create(rt, m.data(), size);
        REQUIRE(d.ok());
        dev = std::move(d).value();
        if (!migrate) return;
        auto mig = dev->migrate_to_device(m.data(), size);
        REQUIRE(mig.ok());
        cpages = mig->cpages;
    }
};

}  // namespace

TEST_CASE("hmm-tests open_close: a device comes and goes") {
    auto rt = make_runtime(arena_conf());
    Buffer b(4);
    auto dev = device(*rt, b);
    CHECK(rt->notifiers().size() == 1);
    dev.reset();
    CHECK(rt->notifiers().size() == 0);
}

TEST_CASE("hmm-tests anon_read: the device reads system memory, one fault") {
    auto rt = make_runtime(arena_conf());
    Buffer b(64);
    auto dev = filled(*rt, b, false);
    auto r = dev->read(b.ptr(), b.size, b.mirror.data());
    REQUIRE(r.ok());
    CHECK(r->cpages == b.npages);
    CHECK(r->faults == 1);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == static_cast<int>(i));
}

TEST_CASE("hmm-tests anon_read_prot: PROT_NONE memory cannot be read by the device (EFAULT)") {
    auto rt = make_runtime(arena_conf());
    Buffer b(16);
    for (std::size_t i = 0; i < b.ints(); ++i) b.ptr()[i] = static_cast<int>(i);
    for (std::size_t i = 0; i < b.ints(); ++i) b.mirror[i] = -static_cast<int>(i);
    auto dev = device(*rt, b);
    REQUIRE(::mprotect(b.m.data(), b.size, PROT_NONE) == 0);
    auto r = dev->read(b.ptr(), b.size, b.mirror.data());
    REQUIRE(!r.ok());
    CHECK(r.error() == std::errc::bad_address);
    REQUIRE(::mprotect(b.m.data(), b.size, PROT_READ) == 0);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == static_cast<int>(i));
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == -static_cast<int>(i));   // untouched
}

TEST_CASE("hmm-tests anon_write: the device writes system memory, one fault") {
    auto rt = make_runtime(arena_conf());
    Buffer b(64);
    REQUIRE(!rt->manage(b.m.data(), b.size));
    for (std::size_t i = 0; i < b.ints(); ++i) b.mirror[i] = static_cast<int>(i);
    auto dev = device(*rt, b);
    auto r = dev->write(b.ptr(), b.size, b.mirror.data());
    REQUIRE(r.ok());
    CHECK(r->cpages == b.npages);
    CHECK(r->faults == 1);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == static_cast<int>(i));
}

TEST_CASE("hmm-tests anon_write_prot: read-only memory: the device reads, a write is EPERM until mprotect") {
    auto rt = make_runtime(arena_conf());
    Buffer b(16);
    auto dev = device(*rt, b);
    REQUIRE(::mprotect(b.m.data(), b.size, PROT_READ) == 0);
    // Read the (zero) memory: one fault.
    auto r = dev->read(b.ptr(), kPage, b.mirror.data());
    REQUIRE(r.ok());
    CHECK(r->cpages == 1);
    CHECK(r->faults == 1);
    CHECK(b.mirror[0] == 0);
    for (std::size_t i = 0; i < b.ints(); ++i) b.mirror[i] = static_cast<int>(i);
    auto w = dev->write(b.ptr(), b.size, b.mirror.data());
    REQUIRE(!w.ok());
    CHECK(w.error() == std::errc::operation_not_permitted);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == 0);
    REQUIRE(::mprotect(b.m.data(), b.size, PROT_READ | PROT_WRITE) == 0);
    w = dev->write(b.ptr(), b.size, b.mirror.data());
    REQUIRE(w.ok());
    CHECK(w->cpages == b.npages);
    CHECK(w->faults == 1);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == static_cast<int>(i));
}

TEST_CASE("hmm-tests anon_read_multiple: the device sees each new value the CPU writes") {
    auto rt = make_runtime(arena_conf());
    Buffer b(16);
    REQUIRE(!rt->manage(b.m.data(), b.size));
    auto dev = device(*rt, b);
    for (int round = 0; round < 4; ++round) {
        for (std::size_t i = 0; i < b.ints(); ++i) b.ptr()[i] = static_cast<int>(i) + round;
        auto r = dev->read(b.ptr(), b.size, b.mirror.data());
        REQUIRE(r.ok());
        CHECK(r->cpages == b.npages);
        CHECK(r->faults <= 1);   // the first round faults; the entries stay valid after
        for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == static_cast<int>(i) + round);
    }
}

TEST_CASE("hmm-tests migrate: to device memory, and the device reads it there") {
    auto rt = make_runtime(arena_conf());
    Buffer b(64);
    auto dev = filled(*rt, b, false);
    auto m = dev->migrate_to_device(b.ptr(), b.size);
    REQUIRE(m.ok());
    CHECK(m->cpages == b.npages);
    CHECK(count_state(*rt, b.ptr(), b.size, PageState::device) == b.npages);
    auto r = dev->read(b.ptr(), b.size, b.mirror.data());
    REQUIRE(r.ok());
    CHECK(r->faults == 0);   // mapped by the migration
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == static_cast<int>(i));
    CHECK(count_state(*rt, b.ptr(), b.size, PageState::device) == b.npages);   // read in place
}

TEST_CASE("hmm-tests migrate_fault: CPU reads bring device pages home; migrate again") {
    auto rt = make_runtime(arena_conf());
    Buffer b(64);
    auto dev = filled(*rt, b, false);
    for (int round = 0; round < 2; ++round) {
        auto m = dev->migrate_to_device(b.ptr(), b.size);
        REQUIRE(m.ok());
        CHECK(m->cpages == b.npages);
        for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == static_cast<int>(i));   // CPU faults
        CHECK(count_state(*rt, b.ptr(), b.size, PageState::host) == b.npages);
    }
    // The pages that came home are invalidated in the device (delivered
    // from the runtime's thread, shortly after the faults).
    CHECK(eventually([&] { return dev->entries() == 0; }));
}

TEST_CASE("hmm-tests migrate_release: the device's release brings its pages home") {
    auto rt = make_runtime(arena_conf());
    Buffer b(64);
    auto dev = filled(*rt, b, true);
    auto rel = dev->release();
    REQUIRE(rel.ok());
    CHECK(rel->cpages == b.npages);
    CHECK(count_state(*rt, b.ptr(), b.size, PageState::host) == b.npages);
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == static_cast<int>(i));
}

TEST_CASE("hmm-tests migrate_multiple: migrate, device write, CPU check, over and over") {
    auto rt = make_runtime(arena_conf());
    Buffer b(32);
    REQUIRE(!rt->manage(b.m.data(), b.size));
    auto dev = device(*rt, b);
    for (int round = 0; round < 8; ++round) {
        for (std::size_t i = 0; i < b.ints(); ++i) b.ptr()[i] = static_cast<int>(i) * round;
        auto m = dev->migrate_to_device(b.ptr(), b.size);
        REQUIRE(m.ok());
        CHECK(m->cpages == b.npages);
        auto r = dev->read(b.ptr(), b.size, b.mirror.data());
        REQUIRE(r.ok());
        for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == static_cast<int>(i) * round);
        for (std::size_t i = 0; i < b.ints(); ++i) b.mirror[i] = static_cast<int>(i) + round;
        REQUIRE(dev->write(b.ptr(), b.size, b.mirror.data()).ok());   // writes the device pages
        for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == static_cast<int>(i) + round);
    }
}

TEST_CASE("hmm-tests migrate_alloc_fail (fail allocation flag): ENOMEM, nothing moved, next one works") {
    auto rt = make_runtime(arena_conf());
    Buffer b(8);
    auto dev = filled(*rt, b, false);
    dev->fail_next_allocation();
    auto m = dev->migrate_to_device(b.ptr(), b.size);
    REQUIRE(!m.ok());
    CHECK(m.error() == std::errc::not_enough_memory);
    CHECK(count_state(*rt, b.ptr(), b.size, PageState::device) == 0);
    m = dev->migrate_to_device(b.ptr(), b.size);
    REQUIRE(m.ok());
    CHECK(m->cpages == b.npages);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == static_cast<int>(i));
}

TEST_CASE("hmm-tests anon_teardown: munmap with device entries and device pages; the device lets go") {
    auto rt = make_runtime(arena_conf());
    for (int round = 0; round < 8; ++round) {
        Buffer b(16);
        REQUIRE(!rt->manage(b.m.data(), b.size));
        for (std::size_t i = 0; i < b.ints(); ++i) b.ptr()[i] = static_cast<int>(i) + round;
        auto dev = device(*rt, b);
        if (round % 2) REQUIRE(dev->migrate_to_device(b.ptr(), b.size).ok());
        REQUIRE(dev->read(b.ptr(), b.size, b.mirror.data()).ok());
        for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == static_cast<int>(i) + round);
        const auto before = dev->invalidations();
        REQUIRE(::munmap(b.m.data(), b.size) == 0);
        b.m.forget();
        CHECK(eventually([&] { return dev->entries() == 0 && dev->invalidations() > before; }));
    }
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));
}

TEST_CASE("hmm-tests snapshot (two devices): local device pages, read-only and writable pages, holes") {
    // fault_around=4K: a first touch fills only its page (by default it
    // zero-fills 64 KiB around it, and page 0 would be present).
    auto rt = make_runtime(arena_conf() + ",fault_around=4K");
    Buffer b(7);
    REQUIRE(!rt->manage(b.m.data(), b.size));
    auto* p = b.m.data();
    // Page 0: never touched. 1: read only. 2: written. 3: PROT_NONE after a write.
    // 4: written, then read-only. 5: on device 0. 6: on device 1.
    (void)*reinterpret_cast<volatile int*>(p + 1 * kPage);
    p[2 * kPage] = std::byte{1};
    p[3 * kPage] = std::byte{1};
    p[4 * kPage] = std::byte{1};
    p[5 * kPage] = std::byte{1};
    p[6 * kPage] = std::byte{1};
    auto dev0 = device(*rt, b);
    auto dev1 = device(*rt, b);
    REQUIRE(dev0->migrate_to_device(p + 5 * kPage, kPage).ok());
    REQUIRE(dev1->migrate_to_device(p + 6 * kPage, kPage).ok());
    REQUIRE(::mprotect(p + 3 * kPage, kPage, PROT_NONE) == 0);
    REQUIRE(::mprotect(p + 4 * kPage, kPage, PROT_READ) == 0);
    std::vector<std::uint8_t> m(b.npages);
    auto s = dev0->snapshot(p, b.size, m.data());
    REQUIRE(s.ok());
    CHECK(s->cpages == b.npages);
    CHECK(m[0] == snap::none);
    // The kernel says ZERO|READ here (the shared zero page). This kernel
    // gives read faults a page of their own, and pagemap shows no PFN
    // without CAP_SYS_ADMIN, so user space reports READ|WRITE or READ.
    CHECK((m[1] & 0x0F) != 0);
    CHECK(m[2] == snap::write);
    CHECK(m[3] == snap::error);
    CHECK(m[4] == snap::read);
    CHECK(m[5] == (snap::device_local | snap::write));
    CHECK(m[6] == snap::none);   // another device's page: not this device's to report, as in the kernel
    REQUIRE(::mprotect(p + 3 * kPage, 2 * kPage, PROT_READ | PROT_WRITE) == 0);
}

TEST_CASE("hmm-tests anon_write_child: a device in a fork()ed child writes the child's copy only") {
    Buffer b(16);
    for (std::size_t i = 0; i < b.ints(); ++i) b.ptr()[i] = static_cast<int>(i);
    for (std::size_t i = 0; i < b.ints(); ++i) b.mirror[i] = -static_cast<int>(i);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        int rc = child_device_write(b.m.data(), b.size, b.mirror);
        for (std::size_t i = 0; !rc && i < b.ints(); ++i)
            if (b.ptr()[i] != -static_cast<int>(i)) rc = 5;   // the child's copy has the device's data
        ::_exit(rc);
    }
    CHECK(child_exit_code(wait_child(child)) == 0);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == static_cast<int>(i));   // the parent's copy
}

TEST_CASE("hmm-tests anon_write_child_shared: a child's device writes shared memory the parent sees") {
    Buffer b(16);
    void* shared = ::mmap(nullptr, b.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(shared != MAP_FAILED);
    auto* ptr = static_cast<int*>(shared);
    for (std::size_t i = 0; i < b.ints(); ++i) ptr[i] = static_cast<int>(i);
    for (std::size_t i = 0; i < b.ints(); ++i) b.mirror[i] = -static_cast<int>(i);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) ::_exit(child_device_write(shared, b.size, b.mirror));
    CHECK(child_exit_code(wait_child(child)) == 0);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(ptr[i] == -static_cast<int>(i));
    ::munmap(shared, b.size);
}

TEST_CASE("hmm-tests file_read and file_write: a device reads and writes a file through its mapping") {
    auto rt = make_runtime(arena_conf());
    char path[] = "/tmp/uhmm-hmm-tests-XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::unlink(path);
    constexpr std::size_t npages = 8, size = npages * kPage;
    std::vector<int> data(size / sizeof(int)), mirror(size / sizeof(int));
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<int>(i);
    REQUIRE(::pwrite(fd, data.data(), size, 0) == static_cast<ssize_t>(size));
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(p != MAP_FAILED);
    auto dev = SoftDevice::create(*rt, p, size);
    REQUIRE(dev.ok());
    auto r = (*dev)->read(p, size, mirror.data());
    REQUIRE(r.ok());
    CHECK(r->cpages == npages);
    CHECK(r->faults == 1);
    CHECK(mirror == data);

    for (std::size_t i = 0; i < mirror.size(); ++i) mirror[i] = -static_cast<int>(i);
    auto w = (*dev)->write(p, size, mirror.data());
    REQUIRE(w.ok());
    CHECK(w->cpages == npages);
    std::vector<int> back(size / sizeof(int));
    REQUIRE(::pread(fd, back.data(), size, 0) == static_cast<ssize_t>(size));
    CHECK(back == mirror);
    dev->reset();
    ::munmap(p, size);
    ::close(fd);
}

TEST_CASE("hmm-tests migrate_shared: shared memory cannot go to the device (ENOENT)") {
    auto rt = make_runtime(arena_conf());
    constexpr std::size_t size = 8 * kPage;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    auto dev = SoftDevice::create(*rt, p, size);
    REQUIRE(dev.ok());
    auto m = (*dev)->migrate_to_device(p, size);
    REQUIRE(!m.ok());
    CHECK(m.error() == std::errc::no_such_file_or_directory);
    dev->reset();
    ::munmap(p, size);
}

TEST_CASE("hmm-tests migrate_mixed (two devices): a mix of system and another device's pages") {
    // fault_around=4K: a CPU touch brings exactly its page home.
    auto rt = make_runtime(arena_conf() + ",fault_around=4K");
    Buffer b(16);
    REQUIRE(!rt->manage(b.m.data(), b.size));
    for (std::size_t i = 0; i < b.ints(); ++i) b.ptr()[i] = static_cast<int>(i);
    auto dev0 = device(*rt, b);
    auto dev1 = device(*rt, b);
    REQUIRE(dev0->migrate_to_device(b.ptr(), b.size).ok());
    // The CPU brings every other page home.
    for (std::size_t pg = 0; pg < b.npages; pg += 2) REQUIRE(b.ptr()[pg * kPage / sizeof(int)] == static_cast<int>(pg * kPage / sizeof(int)));
    // Device 1 migrates the range: only the system pages move (device 0's
    // stay device 0's, as MIGRATE_VMA_SELECT_SYSTEM selects).
    auto m = dev1->migrate_to_device(b.ptr(), b.size);
    REQUIRE(m.ok());
    CHECK(m->cpages == b.npages / 2);
    CHECK(count_state(*rt, b.ptr(), b.size, PageState::device) == b.npages);
    std::vector<std::uint8_t> s0(b.npages), s1(b.npages);
    REQUIRE(dev0->snapshot(b.ptr(), b.size, s0.data()).ok());
    REQUIRE(dev1->snapshot(b.ptr(), b.size, s1.data()).ok());
    for (std::size_t pg = 0; pg < b.npages; ++pg) {
        INFO("page " << pg);
        const bool ones = pg % 2 == 0;   // device 1's
        CHECK(s0[pg] == (ones ? snap::none : (snap::device_local | snap::write)));
        CHECK(s1[pg] == (ones ? (snap::device_local | snap::write) : snap::none));
    }
    // Both read the whole range right, each through its own path.
    auto r0 = dev0->read(b.ptr(), b.size, b.mirror.data());
    REQUIRE(r0.ok());
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == static_cast<int>(i));
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == static_cast<int>(i));
}

TEST_CASE("hmm-tests double_map (two devices): both read the same pages; a CPU write reaches both") {
    auto rt = make_runtime(arena_conf());
    Buffer b(8);
    REQUIRE(!rt->manage(b.m.data(), b.size));
    for (std::size_t i = 0; i < b.ints(); ++i) b.ptr()[i] = static_cast<int>(i);
    auto dev0 = device(*rt, b);
    auto dev1 = device(*rt, b);
    std::vector<int> m1(b.ints());
    auto r0 = dev0->read(b.ptr(), b.size, b.mirror.data());
    auto r1 = dev1->read(b.ptr(), b.size, m1.data());
    REQUIRE(r0.ok());
    REQUIRE(r1.ok());
    CHECK(r0->faults == 1);
    CHECK(r1->faults == 1);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE((b.mirror[i] == static_cast<int>(i) && m1[i] == static_cast<int>(i)));
    for (std::size_t i = 0; i < b.ints(); ++i) b.ptr()[i] = 7 * static_cast<int>(i);
    REQUIRE(dev0->read(b.ptr(), b.size, b.mirror.data()).ok());
    REQUIRE(dev1->read(b.ptr(), b.size, m1.data()).ok());
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE((b.mirror[i] == 7 * static_cast<int>(i) && m1[i] == 7 * static_cast<int>(i)));
}

TEST_CASE("hmm-tests migrate_partial_unmap_fault: munmap part of device memory, the rest faults home intact") {
    auto rt = make_runtime(arena_conf());
    constexpr std::size_t size = Migrated2M::size;   // 2 MiB, as the kernel's
    for (const std::size_t offset : {std::size_t{0}, size / 4, size / 2}) {
        Migrated2M b(*rt);
        CHECK(b.cpages == Migrated2M::npages);
        auto& m = b.m;
        auto* ptr = b.ptr();
        REQUIRE(::munmap(m.data() + offset, size / 2) == 0);
        for (std::size_t i = 0; i < size / sizeof(int); ++i) {
            const std::size_t at = i * sizeof(int);
            if (at >= offset && at < offset + size / 2) continue;
            REQUIRE(ptr[i] == static_cast<int>(i));
        }
        b.dev.reset();
        // Unmap what is left (the hole is already gone).
        if (offset > 0) ::munmap(m.data(), offset);
        if (offset + size / 2 < size) ::munmap(m.data() + offset + size / 2, size - offset - size / 2);
        m.forget();
    }
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));
}

TEST_CASE("hmm-tests migrate_remap_fault: mremap device memory, the CPU reads it at the new place") {
    auto rt = make_runtime(arena_conf());
    constexpr std::size_t size = Migrated2M::size;
    Migrated2M b(*rt);
    auto& m = b.m;
    auto& dev = b.dev;
    void* dst = ::mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(dst != MAP_FAILED);
    void* moved = ::mremap(m.data(), size, size, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    REQUIRE(moved == dst);
    m.forget();
    CHECK(eventually([&] { return dev->entries() == 0; }));   // the device's addresses went away
    auto* np = static_cast<int*>(moved);
    for (std::size_t i = 0; i < size / sizeof(int); ++i) REQUIRE(np[i] == static_cast<int>(i));
    dev.reset();
    ::munmap(moved, size);
}

TEST_CASE("hmm-tests hmm_cow_in_device: fork with pages on the device; each side keeps its own data") {
    auto rt = make_runtime(arena_conf());
    Buffer b(16);
    auto dev = filled(*rt, b, true);
    const pid_t child = ::fork();   // the atfork handler brings the pages home first
    REQUIRE(child >= 0);
    if (child == 0) {
        int rc = 0;
        for (std::size_t i = 0; !rc && i < b.ints(); ++i)
            if (b.ptr()[i] != static_cast<int>(i)) rc = 1;
        for (std::size_t i = 0; i < b.ints(); ++i) b.ptr()[i] = -1;   // the child's copy only
        ::_exit(rc);
    }
    CHECK(child_exit_code(wait_child(child)) == 0);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.ptr()[i] == static_cast<int>(i));
    // The parent's pages can go to the device again.
    auto m = dev->migrate_to_device(b.ptr(), b.size);
    REQUIRE(m.ok());
    CHECK(m->cpages == b.npages);
    REQUIRE(dev->read(b.ptr(), b.size, b.mirror.data()).ok());
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == static_cast<int>(i));
}

// The migrate_anon_huge_* family. Managed ranges are MADV_NOHUGEPAGE, so
// these run on a 2 MiB-aligned buffer of 4 KiB pages: the same states
// (never touched, zero, freed, failing allocation), without THP.

TEST_CASE("hmm-tests migrate_anon_huge_empty / _zero: memory holding no data migrates and reads zero") {
    auto rt = make_runtime(arena_conf());
    Mapping m(2 * MiB, 2 * MiB);
    REQUIRE(m);
    SECTION("empty: never touched") {}
    SECTION("zero: read-touched before the runtime knew") { CHECK(first_nonzero(m.data(), 2 * MiB) == 2 * MiB); }
    REQUIRE(!rt->manage(m.data(), 2 * MiB));
    auto dev = SoftDevice::create(*rt, m.data(), 2 * MiB);
    REQUIRE(dev.ok());
    auto mig = (*dev)->migrate_to_device(m.data(), 2 * MiB);
    REQUIRE(mig.ok());
    CHECK(mig->cpages == 512);
    std::vector<std::byte> seen(2 * MiB, std::byte{1});
    REQUIRE((*dev)->read(m.data(), 2 * MiB, seen.data()).ok());
    CHECK(first_nonzero(seen.data(), seen.size()) == seen.size());
    CHECK(first_nonzero(m.data(), 2 * MiB) == 2 * MiB);   // and the CPU reads zero after
    m.data()[5] = std::byte{9};                            // ordinary memory again
    CHECK(m.data()[5] == std::byte{9});
}

TEST_CASE("hmm-tests migrate_anon_huge_free: MADV_FREE of device memory; what is read is old data or zero") {
    auto rt = make_runtime(arena_conf());
    Migrated2M b(*rt);
    auto& m = b.m;
    auto* ptr = b.ptr();
    REQUIRE(::madvise(m.data(), 2 * MiB, MADV_FREE) == 0);
    for (std::size_t pg = 0; pg < 512; ++pg) {
        const int* page = ptr + pg * kPage / sizeof(int);
        const bool zero = page[0] == 0 && first_nonzero(reinterpret_cast<const std::byte*>(page), kPage) == kPage;
        const bool old = page[1] == static_cast<int>(pg * kPage / sizeof(int) + 1);
        INFO("page " << pg);
        REQUIRE((zero || old));   // MADV_FREE allows either; the runtime frees at once: zero
    }
    CHECK(eventually([&] { return rt->stats().arena.used_pages == 0; }));
}

TEST_CASE("hmm-tests migrate_anon_huge_err: a failing device allocation leaves the memory on the host, intact") {
    auto rt = make_runtime(arena_conf());
    Migrated2M b(*rt, false);
    auto& m = b.m;
    auto* ptr = b.ptr();
    auto* dev = &b.dev;
    (*dev)->fail_next_allocation();
    auto mig = (*dev)->migrate_to_device(m.data(), 2 * MiB);
    REQUIRE(!mig.ok());
    CHECK(mig.error() == std::errc::not_enough_memory);
    CHECK(count_state(*rt, m.data(), 2 * MiB, PageState::host) == 512);
    for (std::size_t i = 0; i < 2 * MiB / sizeof(int); ++i) REQUIRE(ptr[i] == static_cast<int>(i));
    // A real shortage: an arena too small for the buffer. Pages that fit go,
    // the rest stay on the host, every byte intact.
    auto small = make_runtime("arena=memfd,arena_size=2M");
    Mapping m2(4 * MiB);
    REQUIRE(m2);
    fill_pattern(m2.data(), 4 * MiB);
    REQUIRE(!small->manage(m2.data(), 4 * MiB));
    auto d2 = SoftDevice::create(*small, m2.data(), 4 * MiB);
    REQUIRE(d2.ok());
    auto part = (*d2)->migrate_to_device(m2.data(), 4 * MiB);
    REQUIRE(part.ok());
    CHECK(part->cpages > 0);
    CHECK(part->cpages < 1024);
    CHECK(first_mismatch(m2.data(), 4 * MiB) == 4 * MiB);
}

TEST_CASE("hmm-tests migrate_anon_huge_zero_err: a failing allocation over zero memory; the next migration moves it all") {
    // The kernel's flag fails only the THP allocation: the migration falls
    // back to small pages and moves them all at once. There is no THP here,
    // so the flag fails the whole migration (as in migrate_anon_huge_err)
    // and the port migrates again: cpages == npages then, as the kernel's.
    auto rt = make_runtime(arena_conf());
    constexpr std::size_t size = Migrated2M::size, npages = Migrated2M::npages;
    auto round = [&](bool read_first) {
        Mapping m(size, size);
        REQUIRE(m);
        // PROT_READ, as the kernel maps it: these pages can only hold zero.
        REQUIRE(::mprotect(m.data(), size, PROT_READ) == 0);
        REQUIRE(!rt->manage(m.data(), size));
        // The kernel's read of ptr[0] maps the huge zero page under all 2
        // MiB; with 4 KiB pages, every page is read to put a zero page there.
        if (read_first) CHECK(first_nonzero(m.data(), size) == size);
        auto dev = SoftDevice::create(*rt, m.data(), size);
        REQUIRE(dev.ok());
        (*dev)->fail_next_allocation();
        auto mig = (*dev)->migrate_to_device(m.data(), size);
        REQUIRE(!mig.ok());
        CHECK(mig.error() == std::errc::not_enough_memory);
        // Still on the host: never touched (nothing there but zero), or the
        // zero pages read, read again.
        if (read_first) {
            CHECK(count_state(*rt, m.data(), size, PageState::host) == npages);
            CHECK(first_nonzero(m.data(), size) == size);
        } else {
            CHECK(count_state(*rt, m.data(), size, PageState::none) == npages);
        }
        mig = (*dev)->migrate_to_device(m.data(), size);
        REQUIRE(mig.ok());
        CHECK(mig->cpages == npages);
        CHECK(count_state(*rt, m.data(), size, PageState::device) == npages);
        std::vector<std::byte> seen(size, std::byte{1});
        REQUIRE((*dev)->read(m.data(), size, seen.data()).ok());
        CHECK(first_nonzero(seen.data(), size) == size);
        const auto* ptr = reinterpret_cast<const int*>(m.data());
        if (read_first) CHECK(first_nonzero(m.data(), size) == size);   // all of it faults home
        else CHECK(ptr[2048] == 0);   // the kernel's single page back (with its fault-around window here)
    };
    round(false);
    // "Unmap and remap the region to reset things": the runtime has let go
    // of the old range before the new one is managed (it may reuse the address).
    CHECK(eventually([&] { return rt->ranges().empty(); }));
    round(true);
    CHECK(eventually([&] { return rt->ranges().empty() && rt->stats().arena.used_pages == 0; }));
}

TEST_CASE("hmm-tests anon_write_huge: the device writes a transparent huge page (unmanaged memory)") {
    auto rt = make_runtime(arena_conf());
    // Not managed (managed ranges are MADV_NOHUGEPAGE): range_fault and the
    // device work on any memory of the process.
    Mapping m(2 * MiB, 2 * MiB);
    REQUIRE(m);
    (void)::madvise(m.data(), 2 * MiB, MADV_HUGEPAGE);
    std::vector<int> data(2 * MiB / sizeof(int));
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<int>(i);
    auto dev = SoftDevice::create(*rt, m.data(), 2 * MiB);
    REQUIRE(dev.ok());
    auto w = (*dev)->write(m.data(), 2 * MiB, data.data());
    REQUIRE(w.ok());
    CHECK(w->cpages == 512);
    CHECK(w->faults == 1);
    CHECK(std::memcmp(m.data(), data.data(), 2 * MiB) == 0);
}

namespace {

// One 2 MiB hugetlb page, as hmm-tests' hugetlbfs cases get theirs. With no
// free page in the pool, root adds one to nr_hugepages for the case (and
// takes it back after); otherwise the case says why it cannot run.
class HugetlbPage {
public:
    HugetlbPage() {
        if (map()) return;
        if (::geteuid() != 0 || !add_to_pool(+1)) return;
        added_ = true;
        (void)map();
    }
    ~HugetlbPage() {
        if (p_) ::munmap(p_, 2 * MiB);
        if (added_) (void)add_to_pool(-1);
    }
    HugetlbPage(const HugetlbPage&) = delete;
    HugetlbPage& operator=(const HugetlbPage&) = delete;
    void* get() const { return p_; }
    const std::string& why() const { return why_; }

private:
    bool map() {
        void* p = ::mmap(nullptr, 2 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
        if (p == MAP_FAILED) {
            why_ = std::string("no free 2 MiB huge page (MAP_HUGETLB: ") + std::strerror(errno) + ")";
            return false;
        }
        p_ = p;
        return true;
    }
    static bool add_to_pool(long delta) {
        const char* path = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
        std::FILE* f = std::fopen(path, "r+");
        if (!f) return false;
        long n = 0;
        const bool ok = std::fscanf(f, "%ld", &n) == 1 && std::fseek(f, 0, SEEK_SET) == 0 &&
                        std::fprintf(f, "%ld\n", n + delta) > 0;
        return std::fclose(f) == 0 && ok;
    }
    void* p_ = nullptr;
    bool added_ = false;
    std::string why_;
};

}  // namespace

TEST_CASE("hmm-tests anon_write_hugetlbfs: the device writes hugetlb memory; the runtime refuses to manage it") {
    auto rt = make_runtime(arena_conf());
    HugetlbPage huge;
    void* p = huge.get();
    if (!p) {
        WARN(huge.why() << ": case not run");
        return;
    }
    std::string why;
    CHECK(rt->manage(p, 2 * MiB, &why) == std::errc::invalid_argument);   // hugetlb: EINVAL, as documented
    std::vector<int> data(2 * MiB / sizeof(int));
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = -static_cast<int>(i);
    auto dev = SoftDevice::create(*rt, p, 2 * MiB);
    REQUIRE(dev.ok());
    auto w = (*dev)->write(p, 2 * MiB, data.data());
    REQUIRE(w.ok());
    CHECK(w->cpages == 512);
    CHECK(std::memcmp(p, data.data(), 2 * MiB) == 0);
    auto mig = (*dev)->migrate_to_device(p, 2 * MiB);
    REQUIRE(!mig.ok());
    CHECK(mig.error() == std::errc::invalid_argument);   // cannot go to the device
}

TEST_CASE("hmm-tests compound: a snapshot of a hugetlb page says PMD, writable, then read-only after mprotect") {
    auto rt = make_runtime(arena_conf());
    HugetlbPage huge;
    void* p = huge.get();
    if (!p) {
        WARN(huge.why() << ": case not run");
        return;
    }
    constexpr std::size_t npages = 2 * MiB / kPage;
    auto* ptr = static_cast<int*>(p);
    for (std::size_t i = 0; i < 2 * MiB / sizeof(int); ++i) ptr[i] = static_cast<int>(i);
    auto dev = SoftDevice::create(*rt, p, 2 * MiB);
    REQUIRE(dev.ok());
    std::vector<std::uint8_t> m(npages);
    auto s = (*dev)->snapshot(p, 2 * MiB, m.data());
    REQUIRE(s.ok());
    CHECK(s->cpages == npages);
    for (std::size_t i = 0; i < npages; ++i) REQUIRE(m[i] == (snap::write | snap::pmd));
    // A plain mprotect, as the kernel's case: a snapshot asks the kernel anew.
    REQUIRE(::mprotect(p, 2 * MiB, PROT_READ) == 0);
    s = (*dev)->snapshot(p, 2 * MiB, m.data());
    REQUIRE(s.ok());
    CHECK(s->cpages == npages);
    for (std::size_t i = 0; i < npages; ++i) REQUIRE(m[i] == (snap::read | snap::pmd));
}

// The "exclusive" family: HMM_DMIRROR_EXCLUSIVE is SoftDevice::make_exclusive
// (the page moves to the device instead of staying in system memory behind a
// device-exclusive PTE; soft_device.hpp says why), CHECK_EXCLUSIVE is
// check_exclusive(). The kernel's device revokes its atomic entries before the
// CPU access completes; here the runtime tells the device shortly after, so
// the checks of revocation wait for it.

TEST_CASE("hmm-tests exclusive: the device holds pages atomically; CPU access revokes it, data kept") {
    auto rt = make_runtime(arena_conf());
    Buffer b(64);
    auto dev = filled(*rt, b, false);
    auto x = dev->make_exclusive(b.ptr(), b.size);
    REQUIRE(x.ok());
    CHECK(x->cpages == b.npages);
    CHECK(!dev->check_exclusive(b.ptr(), b.size));   // not in the kernel's case: the marks are there
    // The kernel's EXCLUSIVE returns what the device read; here a read
    // through the device's entries, which make_exclusive mapped: no fault.
    auto r = dev->read(b.ptr(), b.size, b.mirror.data());
    REQUIRE(r.ok());
    CHECK(r->faults == 0);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == static_cast<int>(i));
    // The CPU faults the pages back and changes them.
    REQUIRE(cpu_increment_and_check(b.ptr(), b.ints()));
    CHECK(count_state(*rt, b.ptr(), b.size, PageState::host) == b.npages);
    // Atomic access revoked.
    CHECK(eventually([&] { return dev->check_exclusive(b.ptr(), b.size); }));
    // Not in the kernel's case: the device's next access takes one fault
    // and sees the CPU's data.
    r = dev->read(b.ptr(), b.size, b.mirror.data());
    REQUIRE(r.ok());
    CHECK(r->faults == 1);
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == static_cast<int>(i) + 1);
}

TEST_CASE("hmm-tests exclusive_cow: fork with pages held atomically; parent and child each change their own copy") {
    auto rt = make_runtime(arena_conf());
    Buffer b(64);
    auto dev = filled(*rt, b, false);
    auto x = dev->make_exclusive(b.ptr(), b.size);
    REQUIRE(x.ok());
    CHECK(x->cpages == b.npages);
    // The atfork handler tells the device (a fork invalidation: its atomic
    // entries go) and brings the pages home before fork, so each side's
    // copy-on-write is the kernel's own. The child's runtime is inert.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) ::_exit(cpu_increment_and_check(b.ptr(), b.ints()) ? 0 : 1);
    CHECK(dev->check_exclusive(b.ptr(), b.size));   // not in the kernel's case: revoked before fork
    REQUIRE(cpu_increment_and_check(b.ptr(), b.ints()));
    CHECK(child_exit_code(wait_child(child)) == 0);
}

TEST_CASE("hmm-tests exclusive_mprotect: after mprotect(PROT_READ) the device's write is EPERM") {
    auto rt = make_runtime(arena_conf());
    Buffer b(64);
    auto dev = filled(*rt, b, false);
    auto x = dev->make_exclusive(b.ptr(), b.size);
    REQUIRE(x.ok());
    CHECK(x->cpages == b.npages);
    auto r = dev->read(b.ptr(), b.size, b.mirror.data());
    REQUIRE(r.ok());
    for (std::size_t i = 0; i < b.ints(); ++i) REQUIRE(b.mirror[i] == static_cast<int>(i));
    // mprotect sends no userfaultfd event: Runtime::protect is mprotect
    // plus a protection invalidation, which drops the device's entries.
    REQUIRE(!rt->protect(b.m.data(), b.size, PROT_READ));
    CHECK(dev->check_exclusive(b.ptr(), b.size));
    // Simulate a device writing system memory: range_fault refuses the write.
    auto w = dev->write(b.ptr(), b.size, b.mirror.data());
    REQUIRE(!w.ok());
    CHECK(w.error() == std::errc::operation_not_permitted);
    REQUIRE(!rt->protect(b.m.data(), b.size, PROT_READ | PROT_WRITE));
}
