// Shared pieces of the runtime benchmarks (bench/runtime/*.cpp): arguments,
// regions, page-touch loops, medians, the raw userfaultfd round trip, and
// RuntimeStats as JSON.
//
// Arguments are key=value words on the command line; each key may also come
// from the environment as UHMM_BENCH_<KEY> (upper case). `quick` (or
// UHMM_BENCH_QUICK=1) shrinks every default size for a smoke run.
#pragma once

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/userfaultfd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <uhmm/devmem.hpp>
#include <uhmm/runtime.hpp>
#include <uhmm/uffd.hpp>

namespace bench {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

inline constexpr std::size_t kPage = 4096;

// ---- arguments ------------------------------------------------------------------

class Args {
public:
    Args(int argc, char** argv) {
        for (int i = 1; i < argc; ++i) {
            std::string_view a = argv[i];
            while (a.starts_with('-')) a.remove_prefix(1);
            const auto eq = a.find('=');
            if (eq == std::string_view::npos) kv_[std::string(a)] = "1";
            else kv_[std::string(a.substr(0, eq))] = std::string(a.substr(eq + 1));
        }
        quick_ = get("quick", "0") != "0";
    }
    bool quick() const { return quick_; }

    std::string get(const std::string& key, const std::string& def) const {
        if (auto it = kv_.find(key); it != kv_.end()) return it->second;
        std::string env = "UHMM_BENCH_";
        for (char c : key) env += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (const char* v = std::getenv(env.c_str()); v && *v) return v;
        return def;
    }
    // Bytes with an optional K/M/G suffix, rounded up to whole pages.
    std::size_t size(const std::string& key, const std::string& def, const std::string& quick_def) const {
        const std::string text = get(key, quick_ ? quick_def : def);
        auto v = uhmm::devmem::parse_size(text);
        if (!v || *v == 0) {
            std::fprintf(stderr, "bench: %s=%s: not a size (e.g. 256M, 1G)\n", key.c_str(), text.c_str());
            std::exit(2);
        }
        return (*v + kPage - 1) / kPage * kPage;
    }
    long integer(const std::string& key, long def, long quick_def) const {
        const std::string text = get(key, std::to_string(quick_ ? quick_def : def));
        char* end = nullptr;
        const long v = std::strtol(text.c_str(), &end, 10);
        if (end == text.c_str() || *end || v <= 0) {
            std::fprintf(stderr, "bench: %s=%s: not a positive integer\n", key.c_str(), text.c_str());
            std::exit(2);
        }
        return v;
    }
    // A non-negative real number; reals(): a comma-separated list of them.
    double real(const std::string& key, const std::string& def) const {
        const std::string text = get(key, def);
        double v = 0;
        if (!parse_real(text, v)) {
            std::fprintf(stderr, "bench: %s=%s: not a non-negative number\n", key.c_str(), text.c_str());
            std::exit(2);
        }
        return v;
    }
    std::vector<double> reals(const std::string& key, const std::string& def) const {
        std::vector<double> out;
        for (const auto& word : list(key, def)) {
            double v = 0;
            if (!parse_real(word, v)) {
                std::fprintf(stderr, "bench: %s: '%s' is not a non-negative number\n", key.c_str(), word.c_str());
                std::exit(2);
            }
            out.push_back(v);
        }
        return out;
    }
    std::vector<std::string> list(const std::string& key, const std::string& def) const {
        std::vector<std::string> out;
        std::string cur;
        for (char c : get(key, def) + ",") {
            if (c == ',' || c == ' ') {
                if (!cur.empty()) out.push_back(cur);
                cur.clear();
            } else {
                cur += c;
            }
        }
        return out;
    }

private:
    static bool parse_real(const std::string& text, double& v) {
        char* end = nullptr;
        v = std::strtod(text.c_str(), &end);
        return end != text.c_str() && !*end && std::isfinite(v) && v >= 0;
    }

    std::map<std::string, std::string> kv_;
    bool quick_ = false;
};

// ---- small helpers ----------------------------------------------------------------

inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

inline double secs(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

inline double round3(double x) { return std::round(x * 1000.0) / 1000.0; }
inline double round6(double x) { return std::round(x * 1e6) / 1e6; }
inline double ratio(double a, double b) { return b > 0 ? std::round(a / b * 100.0) / 100.0 : 0.0; }

inline std::string size_text(std::size_t bytes) {
    if (bytes % (1u << 30) == 0) return std::to_string(bytes >> 30) + "G";
    if (bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + "M";
    if (bytes % (1u << 10) == 0) return std::to_string(bytes >> 10) + "K";
    return std::to_string(bytes);
}

// An arena big enough for `bytes` of device pages, with a little slack.
inline std::string arena_size_for(std::size_t bytes) {
    const std::size_t chunk = 2u << 20;
    return size_text((bytes + (32u << 20) + chunk - 1) / chunk * chunk);
}

inline long read_long(const char* path) {
    std::ifstream f(path);
    long v = -1;
    f >> v;
    return v;
}

// Exit 77 (meson's "skipped") with the probe's reason when there is no userfaultfd.
inline void require_uffd() {
    const auto& p = uhmm::uffd::probe();
    if (!p.available) {
        std::fprintf(stderr, "bench: skipped: no userfaultfd: %s\n", p.reason.c_str());
        std::exit(77);
    }
}

// Runtime::create with `text`; skip (77) when userfaultfd is refused, fail otherwise.
inline std::unique_ptr<uhmm::Runtime> make_runtime(const std::string& text) {
    std::string why;
    auto cfg = uhmm::RuntimeConfig::parse(text, &why);
    if (!cfg) {
        std::fprintf(stderr, "bench: config '%s': %s\n", text.c_str(), why.c_str());
        std::exit(2);
    }
    auto rt = uhmm::Runtime::create(*cfg, &why);
    if (!rt) {
        const auto ec = rt.error();
        std::fprintf(stderr, "bench: Runtime::create(%s): %s: %s\n", text.c_str(), ec.message().c_str(),
                     why.c_str());
        if (ec == std::errc::operation_not_permitted || ec == std::errc::function_not_supported) std::exit(77);
        std::exit(1);
    }
    return std::move(*rt);
}

// ---- regions -----------------------------------------------------------------------

// Private anonymous memory in 4 KiB pages (MADV_NOHUGEPAGE), unmapped on destruction.
struct Region {
    std::byte* p = nullptr;
    std::size_t len = 0;
    Region() = default;
    explicit Region(std::size_t n) : len(n) {
        void* a = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a == MAP_FAILED) {
            std::perror("bench: mmap");
            std::exit(1);
        }
        p = static_cast<std::byte*>(a);
        ::madvise(p, n, MADV_NOHUGEPAGE);
    }
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    ~Region() {
        if (p) ::munmap(p, len);
    }
    std::size_t pages() const { return len / kPage; }
};

// Page i holds i in its first 8 bytes and a seed-dependent byte at offset 2048.
inline void fill_pattern(std::byte* p, std::size_t len) {
    for (std::size_t i = 0; i < len / kPage; ++i) {
        const std::uint64_t v = i;
        std::memcpy(p + i * kPage, &v, sizeof v);
        p[i * kPage + 2048] = static_cast<std::byte>(i * 31 + 7);
    }
}
// Number of pages whose pattern is wrong.
inline std::size_t check_pattern(const std::byte* p, std::size_t len) {
    std::size_t bad = 0;
    for (std::size_t i = 0; i < len / kPage; ++i) {
        std::uint64_t v;
        std::memcpy(&v, p + i * kPage, sizeof v);
        if (v != i || p[i * kPage + 2048] != static_cast<std::byte>(i * 31 + 7)) ++bad;
    }
    return bad;
}

// ---- touches ------------------------------------------------------------------------

inline volatile std::uint64_t g_sink;

// Touch one byte per page (at offset `at`) of the listed pages, in list order;
// seconds taken.
inline double touch(std::byte* base, const std::vector<std::uint32_t>& order, bool write, std::size_t at = 64) {
    std::uint64_t sum = 0;
    const auto t0 = Clock::now();
    if (write) {
        for (auto i : order) *reinterpret_cast<volatile std::uint8_t*>(base + std::size_t{i} * kPage + at) = 1;
    } else {
        for (auto i : order) sum += *reinterpret_cast<volatile std::uint8_t*>(base + std::size_t{i} * kPage + at);
    }
    const auto t1 = Clock::now();
    g_sink = sum;
    return secs(t0, t1);
}

inline std::vector<std::uint32_t> in_order(std::size_t pages) {
    std::vector<std::uint32_t> v(pages);
    std::iota(v.begin(), v.end(), 0u);
    return v;
}

// `count` distinct pages out of `pages`, in random order (fixed seed per `seed`).
inline std::vector<std::uint32_t> random_pages(std::size_t pages, std::size_t count, std::uint64_t seed) {
    std::vector<std::uint32_t> v = in_order(pages);
    std::mt19937_64 rng(seed);
    std::shuffle(v.begin(), v.end(), rng);
    v.resize(std::min(count, pages));
    return v;
}

// The kernel's own first touch: fresh anonymous memory, 4 KiB pages, one
// access per listed page. µs per page.
inline double kernel_first_touch_us(std::size_t len, const std::vector<std::uint32_t>& order, bool write) {
    Region r(len);
    return touch(r.p, order, write) * 1e6 / static_cast<double>(order.size());
}

// ---- the raw userfaultfd round trip ----------------------------------------------------

alignas(4096) inline std::byte g_src[kPage];

// One bare thread: blocking poll + read + UFFDIO_COPY of 4 KiB, no dispatch,
// no batching (as bench/uffd/fault_roundtrip.cpp). Touch the listed pages of
// a fresh registered region; µs per page.
inline double raw_uffd_copy_us(std::size_t len, const std::vector<std::uint32_t>& order, bool write) {
    uhmm::uffd::OpenOptions o;
    o.wanted = 0;
    auto u = uhmm::uffd::Uffd::open(o);
    if (!u) {
        std::fprintf(stderr, "bench: skipped: %s\n", uhmm::uffd::probe().reason.c_str());
        std::exit(77);
    }
    std::memset(g_src, 0x5A, sizeof g_src);
    const int fd = u->fd();
    std::atomic<bool> stop{false};
    std::thread server([&] {
        uffd_msg msg;
        while (!stop.load(std::memory_order_relaxed)) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            if (::read(fd, &msg, sizeof msg) != sizeof msg) continue;
            if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
            uffdio_copy c{};
            c.dst = msg.arg.pagefault.address & ~(kPage - 1);
            c.src = reinterpret_cast<std::uintptr_t>(g_src);
            c.len = kPage;
            ::ioctl(fd, UFFDIO_COPY, &c);
        }
    });
    double us = 0;
    {
        Region r(len);
        if (!u->register_range(r.p, r.len, uhmm::uffd::Mode::missing)) {
            std::fprintf(stderr, "bench: UFFDIO_REGISTER failed\n");
            std::exit(1);
        }
        us = touch(r.p, order, write) * 1e6 / static_cast<double>(order.size());
        (void)u->unregister_range(r.p, r.len);
    }
    stop = true;
    server.join();
    return us;
}

// ---- runtime statistics -------------------------------------------------------------------

inline json to_json(const uhmm::devmem::ArenaStats& a) {
    return {{"limit_pages", a.limit_pages},         {"capacity_pages", a.capacity_pages},
            {"used_pages", a.used_pages},           {"high_water_pages", a.high_water_pages},
            {"alloc_failures", a.alloc_failures},   {"chunks", a.chunks},
            {"runs_contiguous", a.runs_contiguous}, {"runs_scattered", a.runs_scattered}};
}

inline json to_json(const uhmm::RuntimeStats& s) {
    return {{"ranges", s.ranges},
            {"managed_bytes", s.managed_bytes},
            {"faults", s.faults},
            {"first_touch_faults", s.first_touch_faults},
            {"device_faults", s.device_faults},
            {"write_waits", s.write_waits},
            {"pages_zero_filled", s.pages_zero_filled},
            {"pages_to_device", s.pages_to_device},
            {"pages_to_host", s.pages_to_host},
            {"pages_to_host_on_fault", s.pages_to_host_on_fault},
            {"pages_discarded", s.pages_discarded},
            {"migrate_failed_pages", s.migrate_failed_pages},
            {"bytes_to_device", s.bytes_to_device},
            {"bytes_to_host", s.bytes_to_host},
            {"device_pages", s.device_pages},
            {"metadata_bytes", s.metadata_bytes},
            {"arena", to_json(s.arena)}};
}

// The counters that moved between two snapshots (the ones that explain a figure).
inline json delta(const uhmm::RuntimeStats& a, const uhmm::RuntimeStats& b) {
    auto d = [](std::uint64_t x, std::uint64_t y) { return static_cast<std::int64_t>(y - x); };
    return {{"faults", d(a.faults, b.faults)},
            {"first_touch_faults", d(a.first_touch_faults, b.first_touch_faults)},
            {"device_faults", d(a.device_faults, b.device_faults)},
            {"write_waits", d(a.write_waits, b.write_waits)},
            {"pages_zero_filled", d(a.pages_zero_filled, b.pages_zero_filled)},
            {"pages_to_device", d(a.pages_to_device, b.pages_to_device)},
            {"pages_to_host", d(a.pages_to_host, b.pages_to_host)},
            {"pages_to_host_on_fault", d(a.pages_to_host_on_fault, b.pages_to_host_on_fault)},
            {"migrate_failed_pages", d(a.migrate_failed_pages, b.migrate_failed_pages)},
            {"bytes_to_host", d(a.bytes_to_host, b.bytes_to_host)}};
}

inline json to_json(const uhmm::MigrateResult& r) {
    return {{"requested", r.requested}, {"migrated", r.migrated}, {"already_there", r.already_there},
            {"failed", r.failed},       {"bytes", r.bytes},       {"seconds", round6(r.seconds)},
            {"error", r.error ? r.error.message() : ""}};
}

// Pages per state over [p, p+len).
inline json residency_json(const uhmm::Runtime& rt, const void* p, std::size_t len) {
    std::vector<uhmm::PageState> st(len / kPage);
    if (auto ec = rt.residency(p, len, st)) return {{"error", ec.message()}};
    std::size_t n[4] = {};
    for (auto s : st) ++n[static_cast<int>(s) & 3];
    return {{"none", n[0]}, {"host", n[1]}, {"migrating", n[2]}, {"device", n[3]}};
}

// migrate() or exit with why.
inline uhmm::MigrateResult migrate_or_die(uhmm::Runtime& rt, void* p, std::size_t len, uhmm::Target to) {
    auto r = rt.migrate(p, len, to);
    if (!r) {
        std::fprintf(stderr, "bench: migrate(%s): %s\n", to == uhmm::Target::device ? "device" : "host",
                     r.error().message().c_str());
        std::exit(1);
    }
    return *r;
}

}  // namespace bench
