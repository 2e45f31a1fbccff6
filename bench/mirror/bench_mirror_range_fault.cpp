// range_fault of `size` (1 GiB) of present memory, as a snapshot (no fault
// requested) and with read faults requested (all present: nothing to fault),
// in pages per second, against the limit measured in the same run: reading
// /proc/self/pagemap for the same range (range_fault reads it once per pass,
// plus /proc/self/maps and the runtime's page table). Managed memory (the
// runtime's page table is consulted) and plain memory. Medians of `rounds`.
//
// Then the call a driver makes on each device fault: range_fault of a small
// managed range (16 pages) in a process with `vmas` (1000) other mappings,
// in microseconds per call: against reading its 16 pagemap entries (the
// limit), and with the mappings asked of the kernel each call
// (PROCMAP_QUERY) or served from the view's cache (protection hooked). The
// text of /proc/self/maps, which range_fault read before, is timed too.
// Prints one JSON object. Arguments: size=1G rounds=5 vmas=1000 quick
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

    // ---- small ranges in a process with many mappings ----
    const std::size_t vmas = static_cast<std::size_t>(args.integer("vmas", 1000, 200));
    std::vector<void*> extra;
    for (std::size_t i = 0; i < vmas; ++i) {
        // Alternate protections so that neighbours never merge into one.
        void* e = ::mmap(nullptr, kPage, i % 2 ? PROT_READ : PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (e == MAP_FAILED) return 1;
        extra.push_back(e);
    }
    constexpr std::size_t small = 16;
    constexpr int calls = 2000;
    std::vector<std::uint64_t> small_pfns(small);
    auto per_call_us = [&](auto&& body) {
        std::vector<double> v;
        for (int i = 0; i < rounds; ++i) {
            const auto a = Clock::now();
            for (int c = 0; c < calls; ++c) body(c);
            v.push_back(secs(a, Clock::now()) * 1e6 / calls);
        }
        return median(v);
    };
    auto small_range_fault = [&](int c) {
        uhmm::mirror::Range range;
        range.start = reinterpret_cast<std::uintptr_t>(managed.p) + (static_cast<std::size_t>(c) % 64) * small * kPage;
        range.end = range.start + small * kPage;
        range.pfns = small_pfns.data();
        if (auto ec = uhmm::mirror::range_fault(*rt, range)) {
            std::fprintf(stderr, "bench: range_fault: %s\n", ec.message().c_str());
            std::exit(1);
        }
    };
    const double us_pagemap = per_call_us([&](int c) {
        const auto at = reinterpret_cast<std::uintptr_t>(managed.p) + (static_cast<std::size_t>(c) % 64) * small * kPage;
        if (::pread(fd, small_pfns.data(), small * 8, static_cast<off_t>(at / kPage * 8)) != small * 8) std::exit(1);
    });
    const double us_maps_text = per_call_us([&](int) {
        std::FILE* f = std::fopen("/proc/self/maps", "re");
        char line[512];
        while (f && std::fgets(line, sizeof line, f)) {
        }
        if (f) std::fclose(f);
    });
    const double us_query = per_call_us(small_range_fault);
    rt->protection_hooked(true);
    const double us_cached = per_call_us(small_range_fault);
    const auto st = rt->stats();
    for (void* e : extra) ::munmap(e, kPage);
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
    report["small_range"] = {
        {"pages", small},
        {"other_mappings", vmas},
        {"unit", "microseconds per call (medians)"},
        {"limit_pagemap_read", round3(us_pagemap)},
        {"maps_text_read", round3(us_maps_text)},
        {"range_fault_procmap_query", round3(us_query)},
        {"range_fault_view_cached", round3(us_cached)},
        {"view_cache_hits", st.view_cache_hits},
        {"ratios",
         {{"procmap_query_vs_pagemap", round3(us_query / us_pagemap)},
          {"cached_vs_pagemap", round3(us_cached / us_pagemap)},
          {"maps_text_vs_pagemap", round3(us_maps_text / us_pagemap)}}}};
    std::printf("%s\n", report.dump(2).c_str());
}
