// range_fault of `size` (1 GiB) of present memory, as a snapshot (no fault
// requested) and with read faults requested (all present: nothing to fault),
// in pages per second, against the limit measured in the same run: reading
// /proc/self/pagemap for the same range (range_fault reads it once per pass,
// plus /proc/self/maps and the runtime's page table). Managed memory (the
// runtime's page table is consulted) and plain memory. Medians of `rounds`.
// Prints one JSON object. Arguments: size=1G rounds=5 quick
#include <fcntl.h>

#include <uhmm/mirror.hpp>

#include "../runtime/common.hpp"

using namespace bench;

namespace {

double pages_per_s(std::size_t pages, Clock::time_point a, Clock::time_point b) {
    return static_cast<double>(pages) / secs(a, b);
}

}  // namespace

int main(int argc, char** argv) {
    Args args(argc, argv);
    require_uffd();
    const std::size_t size = args.size("size", "1G", "64M");
    const int rounds = static_cast<int>(args.integer("rounds", 5, 3));
    const std::size_t pages = size / kPage;
    auto rt = make_runtime("arena=memfd,arena_size=64M");

    Region managed(size), plain(size);
    std::memset(managed.p, 1, size);
    std::memset(plain.p, 1, size);
    if (auto ec = rt->manage(managed.p, size)) {
        std::fprintf(stderr, "bench: manage: %s\n", ec.message().c_str());
        return 1;
    }
    std::vector<std::uint64_t> pfns(pages), pm(pages);
    const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

    std::vector<double> limit, snap_managed, fault_managed, snap_plain;
    for (int i = 0; i < rounds; ++i) {
        auto t0 = Clock::now();
        const auto want = static_cast<ssize_t>(pages * 8);
        if (::pread(fd, pm.data(), pages * 8, static_cast<off_t>(reinterpret_cast<std::uintptr_t>(managed.p) / kPage * 8)) != want)
            return 1;
        auto t1 = Clock::now();
        limit.push_back(pages_per_s(pages, t0, t1));

        auto run = [&](Region& r, std::uint64_t flags, std::vector<double>& out) {
            uhmm::mirror::Range range;
            range.start = reinterpret_cast<std::uintptr_t>(r.p);
            range.end = range.start + size;
            range.pfns = pfns.data();
            range.default_flags = flags;
            const auto a = Clock::now();
            if (auto ec = uhmm::mirror::range_fault(*rt, range)) {
                std::fprintf(stderr, "bench: range_fault: %s\n", ec.message().c_str());
                std::exit(1);
            }
            const auto b = Clock::now();
            out.push_back(pages_per_s(pages, a, b));
            for (auto v : pfns)
                if (!(v & uhmm::mirror::pfn::valid)) std::exit(1);
        };
        run(managed, 0, snap_managed);
        run(managed, uhmm::mirror::pfn::req_fault, fault_managed);
        run(plain, 0, snap_plain);
    }
    ::close(fd);

    json report;
    report["benchmark"] = "mirror_range_fault";
    report["bytes"] = size;
    report["rounds"] = rounds;
    report["unit"] = "pages per second (medians)";
    report["limit_pagemap_read"] = round3(median(limit));
    report["snapshot_managed"] = round3(median(snap_managed));
    report["fault_requested_all_present_managed"] = round3(median(fault_managed));
    report["snapshot_plain"] = round3(median(snap_plain));
    report["ratios"] = {{"snapshot_managed_vs_pagemap", round3(median(snap_managed) / median(limit))},
                        {"snapshot_plain_vs_pagemap", round3(median(snap_plain) / median(limit))}};
    std::printf("%s\n", report.dump(2).c_str());
}
