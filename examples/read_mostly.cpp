// A lookup table that devices read and the CPU rarely writes, advised
// read_mostly (cudaMemAdviseSetReadMostly):
//
//   1. the table is filled on the CPU and advised read_mostly;
//   2. a SoftDevice (the reference device) reads it: the runtime makes a
//      read-only replica in device memory, and the pages stay on the host
//      (the CPU keeps reading them without a fault);
//   3. the CPU writes one entry: the write takes a write-protect fault that
//      drops that page's replica before the write completes;
//   4. the device reads again and sees the new value (its page is replicated
//      afresh); the other pages' replicas were never touched.
//
//   read_mostly [entries] [UHMM_CONF-style config]
// Prints the statistics (replicas, replica_invalidations). Exits 0 when
// everything read is what was written, 1 on any mismatch or error, 77 when
// this machine has no userfaultfd.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <uhmm/runtime.hpp>
#include <uhmm/soft_device.hpp>

namespace {

constexpr std::size_t kPage = 4096;

std::uint64_t entry_value(std::size_t i) { return i * 2654435761u + 12345; }

}  // namespace

int main(int argc, char** argv) {
    const std::size_t entries = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 65536;   // 512 KiB
    const char* conf = argc > 2 ? argv[2] : std::getenv("UHMM_CONF");
    std::string why;
    auto config = uhmm::RuntimeConfig::parse(conf ? conf : "arena=memfd,arena_size=64M", &why);
    if (!config) {
        std::fprintf(stderr, "read_mostly: %s\n", why.c_str());
        return 1;
    }
    config->socket = false;
    auto made = uhmm::Runtime::create(*config, &why);
    if (!made) {
        std::fprintf(stderr, "read_mostly: %s\n", why.c_str());
        const auto e = made.error();
        return e == std::errc::operation_not_permitted || e == std::errc::function_not_supported ? 77 : 1;
    }
    uhmm::Runtime& rt = **made;
    int status = 0;
    auto fail = [&](const char* what) {
        std::printf("  MISMATCH: %s\n", what);
        status = 1;
    };

    // 1. The table, filled and advised.
    const std::size_t len = (entries * sizeof(std::uint64_t) + kPage - 1) / kPage * kPage, pages = len / kPage;
    auto mem = rt.allocate(len);
    if (!mem) {
        std::fprintf(stderr, "read_mostly: allocate: %s\n", mem.error().message().c_str());
        return 1;
    }
    auto* table = static_cast<std::uint64_t*>(*mem);
    for (std::size_t i = 0; i < entries; ++i) table[i] = entry_value(i);
    if (auto ec = rt.advise(table, len, uhmm::Advice::set_read_mostly, {}, &why)) {
        std::fprintf(stderr, "read_mostly: advise: %s\n", why.c_str());
        return 1;
    }
    {
        auto dev_made = uhmm::mirror::SoftDevice::create(rt, table, len);
        if (!dev_made) {
            std::fprintf(stderr, "read_mostly: SoftDevice: %s\n", dev_made.error().message().c_str());
            return 1;
        }
        auto& dev = **dev_made;
        std::vector<std::uint64_t> copy(len / sizeof(std::uint64_t));

        // 2. The device reads it all: replicas, the pages stay home.
        auto r = dev.read(table, len, copy.data());
        if (!r) {
            std::fprintf(stderr, "read_mostly: device read: %s\n", r.error().message().c_str());
            return 1;
        }
        const auto s1 = rt.stats();
        std::vector<uhmm::PageState> where(pages);
        (void)rt.residency(table, len, where);
        std::size_t home = 0;
        for (auto s : where) home += s == uhmm::PageState::host;
        std::vector<std::uint8_t> advice(pages);
        (void)rt.advice(table, len, advice);
        std::size_t replicated = 0;
        for (auto a : advice) replicated += (a & uhmm::advice_bits::replicated) != 0;
        std::printf("read_mostly: %zu entries on %zu pages; device read: %zu range_fault passes, %zu pages "
                    "replicated, %zu pages still on the host\n",
                    entries, pages, r->faults, replicated, home);
        for (std::size_t i = 0; i < entries; ++i)
            if (copy[i] != entry_value(i)) {
                fail("the device read a wrong entry");
                break;
            }
        if (replicated != pages || home != pages) fail("not every page replicated and at home");
        // The CPU reads the host pages freely.
        std::uint64_t sum = 0;
        for (std::size_t i = 0; i < entries; ++i) sum += table[i];
        if (rt.stats().faults != s1.faults) fail("the CPU faulted reading a read-mostly page");

        // 3. The CPU writes one entry: its page's replica goes first.
        const std::size_t victim = entries / 2;
        table[victim] = 42;
        const auto s2 = rt.stats();
        std::printf("  CPU wrote entry %zu: replica_invalidations %llu -> %llu, replicas %llu -> %llu\n", victim,
                    static_cast<unsigned long long>(s1.replica_invalidations),
                    static_cast<unsigned long long>(s2.replica_invalidations),
                    static_cast<unsigned long long>(s1.replicas), static_cast<unsigned long long>(s2.replicas));
        if (s2.replica_invalidations != s1.replica_invalidations + 1) fail("the write did not drop one replica");

        // 4. The device sees the new value.
        r = dev.read(table, len, copy.data());
        if (!r) {
            std::fprintf(stderr, "read_mostly: device read: %s\n", r.error().message().c_str());
            return 1;
        }
        if (copy[victim] != 42) fail("the device read the old value after the write");
        for (std::size_t i = 0; i < entries; ++i)
            if (i != victim && copy[i] != entry_value(i)) {
                fail("the device read a wrong entry after the write");
                break;
            }
        const auto s3 = rt.stats();
        std::printf("  device read again: entry %zu = %llu; replicas %llu (made %llu), replica_invalidations %llu; "
                    "checksum %llx\n",
                    victim, static_cast<unsigned long long>(copy[victim]),
                    static_cast<unsigned long long>(s3.replicas), static_cast<unsigned long long>(s3.replicas_made),
                    static_cast<unsigned long long>(s3.replica_invalidations), static_cast<unsigned long long>(sum));
        std::printf("  %s\n", status ? "MISMATCH" : "ok");
    }
    (void)rt.release(table, len);
    return status;
}
