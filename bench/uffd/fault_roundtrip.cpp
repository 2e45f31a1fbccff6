// Fault round trip: what one userfaultfd fault costs through uhmm's Monitor,
// against the limits measured in the same run:
//   - the kernel's own first touch of a fresh anonymous page (no uffd),
//   - a raw userfaultfd round trip (one bare thread: poll, read, ioctl),
// for MISSING+COPY, MISSING+ZEROPAGE (read faults) and WP (un-protect).
// Prints one JSON object; medians of several rounds.
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#include <uhmm/uffd.hpp>

using namespace uhmm;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kPages = 4096;   // 16 MiB per round
constexpr int kRounds = 7;

struct Region {
    std::byte* p;
    std::size_t len;
    explicit Region(std::size_t n) : len(n) {
        p = static_cast<std::byte*>(::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        ::madvise(p, n, MADV_NOHUGEPAGE);   // 4 KiB faults, as uhmm registers its ranges
    }
    ~Region() { ::munmap(p, len); }
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// µs per page for `touch` over a fresh region prepared by `setup`.
double per_page_us(const std::function<void(Region&)>& setup, const std::function<void(Region&)>& teardown,
                   bool write) {
    std::vector<double> samples;
    for (int r = 0; r < kRounds; ++r) {
        Region reg(kPages * kPage);
        setup(reg);
        const auto t0 = Clock::now();
        for (std::size_t i = 0; i < kPages; ++i) {
            auto* b = reinterpret_cast<volatile std::uint8_t*>(reg.p + i * kPage);
            if (write) *b = 1;
            else (void)*b;
        }
        const auto t1 = Clock::now();
        teardown(reg);
        samples.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / kPages);
    }
    return median(samples);
}

alignas(4096) std::byte g_src[kPage];

class BenchHandler : public uffd::Handler {
public:
    enum class Mode { copy, zero, wp };
    BenchHandler(uffd::Uffd& u, Mode m) : u_(u), mode_(m) {}
    uffd::FaultDisposition on_fault(const uffd::PageFault& f) noexcept override {
        void* page = reinterpret_cast<void*>(f.address & ~(kPage - 1));
        uffd::Outcome o;
        switch (mode_) {
            case Mode::copy: o = u_.copy(page, g_src, kPage); break;
            case Mode::zero: o = u_.zeropage(page, kPage); break;
            case Mode::wp: o = u_.writeprotect(page, kPage, false); break;
        }
        return o.status == uffd::Status::retry ? uffd::FaultDisposition::retry_later
                                               : uffd::FaultDisposition::resolved;
    }

private:
    uffd::Uffd& u_;
    Mode mode_;
};

uffd::Uffd open_quiet() {
    uffd::OpenOptions o;
    o.wanted = uffd::feature::pagefault_flag_wp | uffd::feature::thread_id;
    auto u = uffd::Uffd::open(o);
    if (!u) {
        std::fprintf(stderr, "bench: %s\n", uffd::probe().reason.c_str());
        std::exit(77);
    }
    return std::move(*u);
}

// Through the Monitor.
double monitor_us(BenchHandler::Mode mode, bool write, unsigned threads = 1) {
    auto u = open_quiet();
    BenchHandler h(u, mode);
    uffd::Monitor mon(u, h, {.threads = threads});
    if (mon.start()) std::exit(1);
    const auto modes = mode == BenchHandler::Mode::wp ? (uffd::Mode::missing | uffd::Mode::wp) : uffd::Mode::missing;
    return per_page_us(
        [&](Region& r) {
            if (mode == BenchHandler::Mode::wp) std::memset(r.p, 7, r.len);   // present pages
            (void)u.register_range(r.p, r.len, modes);
            if (mode == BenchHandler::Mode::wp) (void)u.writeprotect(r.p, r.len, true);
        },
        [&](Region& r) { (void)u.unregister_range(r.p, r.len); }, write);
}

// The bare minimum: one thread, blocking poll + read + UFFDIO_COPY, no
// dispatch, no batching — the limit the Monitor is measured against.
double raw_copy_us() {
    auto u = open_quiet();
    std::atomic<bool> stop{false};
    std::thread server([&] {
        uffd_msg msg;
        while (!stop.load()) {
            pollfd p{u.fd(), POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            if (::read(u.fd(), &msg, sizeof msg) != sizeof msg) continue;
            if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
            uffdio_copy c{};
            c.dst = msg.arg.pagefault.address & ~(kPage - 1);
            c.src = reinterpret_cast<std::uintptr_t>(g_src);
            c.len = kPage;
            ::ioctl(u.fd(), UFFDIO_COPY, &c);
        }
    });
    const double us = per_page_us([&](Region& r) { (void)u.register_range(r.p, r.len, uffd::Mode::missing); },
                                  [&](Region& r) { (void)u.unregister_range(r.p, r.len); }, true);
    stop = true;
    server.join();
    return us;
}

}  // namespace

int main() {
    std::memset(g_src, 0x5A, sizeof g_src);
    const auto none = [](Region&) {};
    const double first_touch_write = per_page_us(none, none, true);
    const double first_touch_read = per_page_us(none, none, false);
    const double raw_copy = raw_copy_us();
    const double mon_copy = monitor_us(BenchHandler::Mode::copy, true);
    const double mon_copy2 = monitor_us(BenchHandler::Mode::copy, true, 2);
    const double mon_zero = monitor_us(BenchHandler::Mode::zero, false);
    const double mon_wp = monitor_us(BenchHandler::Mode::wp, true);

    const auto r = [](double a, double b) { return std::round(a / b * 100.0) / 100.0; };
    nlohmann::json out = {
        {"benchmark", "uffd_fault_roundtrip"},
        {"pages_per_round", kPages},
        {"rounds", kRounds},
        {"unit", "us_per_fault"},
        {"limits",
         {{"kernel_first_touch_write", first_touch_write},
          {"kernel_first_touch_read", first_touch_read},
          {"raw_uffd_missing_copy", raw_copy}}},
        {"monitor",
         {{"missing_copy", mon_copy},
          {"missing_copy_2_readers", mon_copy2},
          {"missing_zeropage_read", mon_zero},
          {"wp_unprotect", mon_wp}}},
        {"ratios",
         {{"missing_copy_vs_raw_uffd", r(mon_copy, raw_copy)},
          {"missing_copy_vs_first_touch", r(mon_copy, first_touch_write)},
          {"zeropage_vs_first_touch_read", r(mon_zero, first_touch_read)},
          {"wp_vs_first_touch", r(mon_wp, first_touch_write)}}},
    };
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
}
