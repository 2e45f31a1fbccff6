// The main job until the preload library arrives: a real workload on memory
// managed by uhmm::Runtime. It fills a buffer, pushes it to device memory,
// reads it back through CPU faults (pages come home on touch), does it again
// with explicit migrations, and prints a short report with the checksums and
// each copy's rate as a fraction of memcpy measured in the same run.
//
//   runtime_demo [MiB] [UHMM_CONF-style config]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <uhmm/runtime.hpp>

namespace {

std::uint64_t checksum(const std::uint64_t* p, std::size_t words) {
    std::uint64_t h = 1469598103934665603ull;
    for (std::size_t i = 0; i < words; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

double since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    const std::size_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 256;
    const char* conf = argc > 2 ? argv[2] : std::getenv("UHMM_CONF");
    std::string why;
    auto config = uhmm::RuntimeConfig::parse(conf ? conf : "", &why);
    if (!config) {
        std::fprintf(stderr, "runtime_demo: %s\n", why.c_str());
        return 2;
    }
    if (config->arena.size < (mib << 20)) config->arena.size = (mib << 20) + (64u << 20);
    auto rt = uhmm::Runtime::create(*config, &why);
    if (!rt) {
        std::fprintf(stderr, "runtime_demo: %s\n", why.c_str());
        return 1;
    }
    auto& runtime = **rt;
    const std::size_t len = mib << 20, words = len / 8;
    auto mem = runtime.allocate(len);
    if (!mem) {
        std::fprintf(stderr, "runtime_demo: allocate: %s\n", mem.error().message().c_str());
        return 1;
    }
    auto* data = static_cast<std::uint64_t*>(*mem);
    std::printf("uhmm runtime demo: %zu MiB\n  %s\n", mib, runtime.describe().c_str());

    auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < words; ++i) data[i] = i * 0x9E3779B97F4A7C15ull;
    const double fill_s = since(t0);
    const std::uint64_t expect = checksum(data, words);

    auto to_dev = runtime.migrate(data, len, uhmm::Target::device);
    if (!to_dev) {
        std::fprintf(stderr, "runtime_demo: migrate: %s\n", to_dev.error().message().c_str());
        return 1;
    }
    const auto s1 = runtime.stats();
    t0 = std::chrono::steady_clock::now();
    const std::uint64_t after_faults = checksum(data, words);   // every page comes home on touch
    const double touch_s = since(t0);
    const auto s2 = runtime.stats();

    auto again = runtime.migrate(data, len, uhmm::Target::device);
    auto home = runtime.migrate(data, len, uhmm::Target::host);
    const std::uint64_t after_request = checksum(data, words);

    // The limit the copies are measured against: memcpy of the same size,
    // between two host buffers already touched, in this run.
    std::vector<std::uint64_t> scratch(words);
    std::memcpy(scratch.data(), data, len);   // first touch of the scratch pages, not timed
    t0 = std::chrono::steady_clock::now();
    std::memcpy(scratch.data(), data, len);
    const double memcpy_gbs = len / since(t0) / 1e9;

    // Pages the arena had no room for stay on the host with their data:
    // reported, and not an error; a checksum that differs is.
    const bool ok = after_faults == expect && after_request == expect;
    std::printf("  first touch + fill:  %.1f ms (%.2f GB/s, %llu zero-fill faults)\n", fill_s * 1e3,
                len / fill_s / 1e9, static_cast<unsigned long long>(s1.first_touch_faults));
    // Rates count the bytes that moved (pages that had no room did not).
    auto moved = [](const uhmm::MigrateResult& r) { return double(r.migrated) * 4096; };
    const double touched = double(s2.pages_to_host_on_fault - s1.pages_to_host_on_fault) * 4096;
    auto rate = [](double bytes, double seconds) { return seconds > 0 ? bytes / seconds / 1e9 : 0.0; };
    std::printf("  memcpy, host to host: %.2f GB/s (the limit the ratios below are of)\n", memcpy_gbs);
    std::printf("  to device:           %zu pages in %.1f ms (%.2f GB/s, %.2fx memcpy), device pages held: %llu\n",
                to_dev->migrated, to_dev->seconds * 1e3, rate(moved(*to_dev), to_dev->seconds),
                rate(moved(*to_dev), to_dev->seconds) / memcpy_gbs,
                static_cast<unsigned long long>(s1.device_pages));
    if (to_dev->failed)
        std::printf("                       %zu pages stayed on the host: %s\n", to_dev->failed,
                    to_dev->error ? to_dev->error.message().c_str() : "no room");
    std::printf("  home on CPU touch:   %.1f ms (%.2f GB/s, %.2fx memcpy; %llu faults brought %llu pages)\n",
                touch_s * 1e3, rate(touched, touch_s), rate(touched, touch_s) / memcpy_gbs,
                static_cast<unsigned long long>(s2.device_faults - s1.device_faults),
                static_cast<unsigned long long>(s2.pages_to_host_on_fault - s1.pages_to_host_on_fault));
    if (again && home) {
        std::printf("  to device again:     %.1f ms (%.2f GB/s, %.2fx memcpy)\n", again->seconds * 1e3,
                    rate(moved(*again), again->seconds), rate(moved(*again), again->seconds) / memcpy_gbs);
        std::printf("  home by request:     %.1f ms (%.2f GB/s, %.2fx memcpy, %zu pages)\n", home->seconds * 1e3,
                    rate(moved(*home), home->seconds), rate(moved(*home), home->seconds) / memcpy_gbs, home->migrated);
    }
    std::printf("  page-table metadata: %.2f bytes per 4 KiB page\n",
                double(runtime.stats().metadata_bytes) / double(len / 4096));
    std::printf("  checksums: %s (%016llx)\n", ok ? "all match" : "MISMATCH", static_cast<unsigned long long>(expect));
    (void)runtime.release(data, len);
    return ok ? 0 : 1;
}
