// Copy engine throughput, host → arena and arena → host, for 4 KiB
// (scattered device pages), 64 KiB and 2 MiB ops in 8 MiB batches, for the
// io_uring engine (IOSQE_ASYNC, inline issue, and its CPU-worker mode), the
// memcpy engine, and
// plain memcpy between two host buffers with the same op pattern: the limit,
// measured in the same run. Also the CPU time of the submitting thread and of
// the whole process per GiB moved (io_uring's io-wq workers are threads of
// the process), and the hugetlb arena when huge pages can be reserved.
//
// One batch at a time, submit then wait, as a migration does. Medians of
// `kTrials` trials. Prints one JSON object on stdout.
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <uhmm/copy_engine.hpp>
#include <uhmm/fd.hpp>

using namespace uhmm;
using migrate::CopyOp;
using migrate::Direction;
using migrate::EngineKind;
using nlohmann::json;

namespace {

constexpr std::size_t kPage = devmem::kPageSize;
constexpr std::size_t kArenaBytes = 64u << 20;
constexpr std::size_t kBatchBytes = 8u << 20;
constexpr std::size_t kTrialBytes = 256u << 20;   // per trial: 32 batches
constexpr int kTrials = 5;

std::byte* map(std::size_t bytes, int fd = -1, int extra = 0) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     (fd >= 0 ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS) | MAP_POPULATE | extra, fd, 0);
    if (p == MAP_FAILED) {
        std::perror("mmap");
        std::exit(1);
    }
    return static_cast<std::byte*>(p);
}

double thread_cpu() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double process_cpu() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto s = [](timeval t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
    return s(ru.ru_utime) + s(ru.ru_stime);
}

struct Sample {
    double gbps;
    double thread_cpu_per_gib;
    double process_cpu_per_gib;
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Run `batch(i)` for every batch of a trial, kTrials times; medians.
Sample measure(std::size_t batches_per_trial, const std::function<void(std::size_t)>& batch) {
    batch(0);   // warm-up
    std::vector<double> gbps, tcpu, pcpu;
    const double gib = static_cast<double>(kTrialBytes) / (1u << 30);
    for (int t = 0; t < kTrials; ++t) {
        const double t0 = thread_cpu(), p0 = process_cpu();
        const auto w0 = std::chrono::steady_clock::now();
        for (std::size_t b = 0; b < batches_per_trial; ++b) batch(b);
        const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
        gbps.push_back(static_cast<double>(kTrialBytes) / wall / 1e9);
        tcpu.push_back((thread_cpu() - t0) / gib);
        pcpu.push_back((process_cpu() - p0) / gib);
    }
    return {median(gbps), median(tcpu), median(pcpu)};
}

json to_json(const Sample& s, double limit) {
    return {{"GBps", s.gbps},
            {"ratio_to_limit", s.gbps / limit},
            {"submitter_cpu_s_per_GiB", s.thread_cpu_per_gib},
            {"process_cpu_s_per_GiB", s.process_cpu_per_gib}};
}

// The ops of every batch: host side contiguous; arena side a random
// permutation of blocks ("scattered") or the same order (contiguous runs,
// which the io_uring engine coalesces).
std::vector<std::vector<CopyOp>> make_batches(std::byte* host, std::size_t block, std::size_t arena_bytes,
                                              bool scatter) {
    const std::size_t blocks = arena_bytes / block;
    std::vector<std::size_t> dst(blocks);
    std::iota(dst.begin(), dst.end(), std::size_t{0});
    if (scatter) std::shuffle(dst.begin(), dst.end(), std::mt19937(1));
    const std::size_t per_batch = kBatchBytes / block;
    std::vector<std::vector<CopyOp>> batches(blocks / per_batch);
    for (std::size_t i = 0; i < blocks; ++i)
        batches[i / per_batch].push_back({host + i * block, dst[i] * block, static_cast<std::uint32_t>(block)});
    return batches;
}

std::string size_name(std::size_t block) {
    return block >= (1u << 20) ? std::to_string(block >> 20) + "MiB" : std::to_string(block >> 10) + "KiB";
}

struct Arena {
    Fd fd;
    std::byte* base = nullptr;
    devmem::ArenaView view;
};

std::optional<Arena> make_arena(std::size_t bytes, bool hugetlb) {
    Arena a;
    a.fd = Fd(::memfd_create("uhmm-bench-arena", MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB : 0u)));
    if (!a.fd || ::ftruncate(a.fd.get(), static_cast<off_t>(bytes)) != 0) return std::nullopt;
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, a.fd.get(), 0);
    if (p == MAP_FAILED) return std::nullopt;
    a.base = static_cast<std::byte*>(p);
    a.view = {hugetlb ? devmem::ArenaKind::hugetlb : devmem::ArenaKind::memfd, a.fd.get(), a.base, bytes, -1, nullptr};
    return a;
}

struct EngineSpec {
    const char* name;
    EngineKind kind;
    bool offload;
    bool cpu_worker;
};
constexpr EngineSpec kEngines[] = {
    {"io_uring", EngineKind::uring, true, false},
    {"io_uring_inline", EngineKind::uring, false, false},
    {"io_uring_cpu_worker", EngineKind::uring, true, true},
    {"memcpy_engine", EngineKind::memcpy, true, false},
};

// Every engine, both directions, every block size, against the limit.
struct Shape {
    std::size_t block;
    bool scatter;
    std::string name() const { return size_name(block) + (scatter ? "_scattered" : "_contiguous"); }
};

json run_arena(const Arena& arena, std::byte* host, std::byte* host2, const std::vector<Shape>& shapes) {
    json out;
    const std::size_t per_trial = kTrialBytes / kBatchBytes;
    for (const Shape& shape : shapes) {
        const std::size_t block = shape.block;
        const auto batches = make_batches(host, block, arena.view.size, shape.scatter);
        const std::size_t nb = batches.size();
        // The limit: plain memcpy, host → host, with the same pattern.
        const Sample limit = measure(per_trial, [&](std::size_t b) {
            for (const auto& op : batches[b % nb])
                std::memcpy(host2 + op.arena_offset, op.host, op.len);
        });
        out["limit_plain_memcpy"][shape.name()] = to_json(limit, limit.gbps);
        for (const auto& spec : kEngines) {
            migrate::EngineOptions opts;
            opts.offload = spec.offload;
            opts.cpu_worker = spec.cpu_worker;
            opts.staging_slots = 0;
            auto e = migrate::make_copy_engine(spec.kind, arena.view, opts);
            if (!e) {
                out["error"][spec.name] = e.error().message();
                continue;
            }
            for (auto dir : {Direction::to_device, Direction::to_host}) {
                const Sample s = measure(per_trial, [&](std::size_t b) {
                    if ((*e)->submit(dir, batches[b % nb]).wait()) {
                        std::fprintf(stderr, "copy failed\n");
                        std::exit(1);
                    }
                });
                out[dir == Direction::to_device ? "host_to_arena" : "arena_to_host"][shape.name()][spec.name] =
                    to_json(s, limit.gbps);
            }
        }
    }
    return out;
}

// Huge pages for the hugetlb arena, added and later taken back (relative,
// since other programs may hold their own).
struct Reservation {
    long added = 0;
    static long read() {
        std::ifstream in("/proc/sys/vm/nr_hugepages");
        long v = -1;
        in >> v;
        return v;
    }
    static void write(long v) { std::ofstream("/proc/sys/vm/nr_hugepages") << v << '\n'; }
    bool reserve(long n) {
        const long before = read();
        if (before < 0 || ::geteuid() != 0) return false;
        write(before + n);
        added = read() - before;
        return added >= n;
    }
    ~Reservation() {
        if (added > 0) write(read() - added);
    }
};

}  // namespace

int main() {
    json report;
    report["bench"] = "copy_engine";
    report["batch_bytes"] = kBatchBytes;
    report["trial_bytes"] = kTrialBytes;
    report["trials"] = kTrials;
    report["io_uring"] = migrate::uring_support().available ? "available" : migrate::uring_support().reason;

    std::byte* host = map(kArenaBytes);
    std::byte* host2 = map(kArenaBytes);
    for (std::size_t i = 0; i < kArenaBytes; ++i) host[i] = static_cast<std::byte>(i * 131 + 7);

    auto memfd = make_arena(kArenaBytes, false);
    if (!memfd) {
        std::perror("memfd arena");
        return 1;
    }
    report["memfd"] = run_arena(*memfd, host, host2,
                                {{4096, true}, {4096, false}, {65536, true}, {2u << 20, true}});

    {
        Reservation r;
        std::optional<Arena> huge;
        if (r.reserve(kArenaBytes / devmem::kChunkSize)) huge = make_arena(kArenaBytes, true);
        if (huge) report["hugetlb"] = run_arena(*huge, host, host2, {{4096, true}, {2u << 20, true}});
        else report["hugetlb"] = {{"skipped", "huge pages could not be reserved (needs root and free memory)"}};
        if (huge) ::munmap(huge->base, kArenaBytes);
    }

    const auto& m = report["memfd"];
    const double r2m = m["host_to_arena"]["2MiB_scattered"]["io_uring"]["ratio_to_limit"];
    const double r2m_back = m["arena_to_host"]["2MiB_scattered"]["io_uring"]["ratio_to_limit"];
    const double cpu_uring = m["host_to_arena"]["2MiB_scattered"]["io_uring"]["submitter_cpu_s_per_GiB"];
    const double cpu_memcpy = m["host_to_arena"]["2MiB_scattered"]["memcpy_engine"]["submitter_cpu_s_per_GiB"];
    const double w2m = m["host_to_arena"]["2MiB_scattered"]["io_uring_cpu_worker"]["ratio_to_limit"];
    const double w2m_back = m["arena_to_host"]["2MiB_scattered"]["io_uring_cpu_worker"]["ratio_to_limit"];
    const double cpu_worker = m["host_to_arena"]["2MiB_scattered"]["io_uring_cpu_worker"]["submitter_cpu_s_per_GiB"];
    report["goal"] = {{"io_uring_2MiB_host_to_arena_ratio", r2m},
                      {"io_uring_2MiB_arena_to_host_ratio", r2m_back},
                      {"ratio_goal", 0.7},
                      {"ratio_met", r2m >= 0.7 && r2m_back >= 0.7},
                      {"submitter_cpu_io_uring_vs_memcpy_2MiB", cpu_uring / cpu_memcpy},
                      {"cpu_goal_met", cpu_uring < cpu_memcpy},
                      {"cpu_worker_2MiB_host_to_arena_ratio", w2m},
                      {"cpu_worker_2MiB_arena_to_host_ratio", w2m_back},
                      {"submitter_cpu_cpu_worker_vs_memcpy_2MiB", cpu_worker / cpu_memcpy}};
    std::cout << report.dump(2) << std::endl;
    return 0;
}
