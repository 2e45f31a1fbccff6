// Invalidation latency: from the application's munmap (or madvise DONTNEED)
// of managed memory to the device's notifier callback, against the limit
// measured in the same run: the same munmap / madvise of a range registered
// with a bare userfaultfd whose reader thread only reads the event (the time
// until that read). The runtime's path adds the handler, the post to the
// delivery ring, a thread wake-up and the registry lookup. Also the time
// until munmap itself returns, both ways. Medians in µs; prints one JSON object.
//
// Arguments (key=value, or UHMM_BENCH_<KEY>): rounds=300 pages=16 quick
#include <uhmm/mirror.hpp>

#include "../runtime/common.hpp"

using namespace bench;

namespace {

// The notifier: remembers when its first callback of the wanted event ran.
struct Stopwatch : uhmm::mirror::Notifier {
    uhmm::mirror::Event want = uhmm::mirror::Event::unmap;
    std::atomic<std::int64_t> at{0};
    bool invalidate(const uhmm::mirror::Invalidation& inv, std::uint64_t) noexcept override {
        std::int64_t none = 0;
        if (inv.event == want)
            at.compare_exchange_strong(none, Clock::now().time_since_epoch().count());
        return true;
    }
};

[[noreturn]] void die(const char* what, std::error_code ec) {
    std::fprintf(stderr, "bench: %s: %s\n", what, ec.message().c_str());
    std::exit(1);
}

double us_since(Clock::time_point t0, std::int64_t ticks) {
    return std::chrono::duration<double, std::micro>(Clock::time_point(Clock::duration(ticks)) - t0).count();
}

std::int64_t wait_for(const std::atomic<std::int64_t>& at) {
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    std::int64_t v;
    while (!(v = at.load(std::memory_order_acquire))) {
        if (Clock::now() > deadline) {
            std::fprintf(stderr, "bench: no callback within 5 s\n");
            std::exit(1);
        }
        std::this_thread::yield();
    }
    return v;
}

struct Samples {
    std::vector<double> callback_us, return_us;
};

// The limit: a bare userfaultfd, one reader that polls and reads.
Samples raw_event_read(int rounds, std::size_t len, bool clear) {
    auto u = uhmm::uffd::Uffd::open({.wanted = uhmm::uffd::feature::event_unmap | uhmm::uffd::feature::event_remove});
    if (!u) {
        std::fprintf(stderr, "bench: userfaultfd: %s\n", u.error().message().c_str());
        std::exit(1);
    }
    std::atomic<std::int64_t> read_at{0};
    std::atomic<bool> stop{false};
    std::thread reader([&] {
        while (!stop.load()) {
            pollfd p{u->fd(), POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            auto ev = u->read_events();
            if (ev && !ev->empty()) read_at.store(Clock::now().time_since_epoch().count(), std::memory_order_release);
        }
    });
    Samples s;
    for (int i = 0; i < rounds; ++i) {
        Region r(len);
        std::memset(r.p, 1, len);
        if (auto reg = u->register_range(r.p, len, uhmm::uffd::missing); !reg) die("register", reg.error());
        read_at.store(0);
        const auto t0 = Clock::now();
        if (clear) (void)::madvise(r.p, len, MADV_DONTNEED);
        else ::munmap(r.p, len);
        const auto t1 = Clock::now();
        s.callback_us.push_back(us_since(t0, wait_for(read_at)));
        s.return_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        if (clear) (void)u->unregister_range(r.p, len);
        else r.p = nullptr;   // gone already
    }
    stop = true;
    reader.join();
    return s;
}

Samples runtime_callback(uhmm::Runtime& rt, int rounds, std::size_t len, bool clear) {
    Samples s;
    for (int i = 0; i < rounds; ++i) {
        Region r(len);
        std::memset(r.p, 1, len);
        if (auto ec = rt.manage(r.p, len)) die("manage", ec);
        Stopwatch dev;
        dev.want = clear ? uhmm::mirror::Event::clear : uhmm::mirror::Event::unmap;
        if (auto ec = rt.notifiers().insert(dev, reinterpret_cast<std::uintptr_t>(r.p), len)) die("insert", ec);
        const auto t0 = Clock::now();
        if (clear) (void)::madvise(r.p, len, MADV_DONTNEED);
        else ::munmap(r.p, len);
        const auto t1 = Clock::now();
        s.callback_us.push_back(us_since(t0, wait_for(dev.at)));
        s.return_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        rt.notifiers().remove(dev);
        if (clear) (void)rt.unmanage(r.p, len);
        else r.p = nullptr;
    }
    return s;
}

json summary(const Samples& s) {
    return {{"callback_us_median", round3(median(s.callback_us))}, {"return_us_median", round3(median(s.return_us))}};
}

}  // namespace

int main(int argc, char** argv) {
    Args args(argc, argv);
    require_uffd();
    const int rounds = static_cast<int>(args.integer("rounds", 300, 50));
    const std::size_t len = static_cast<std::size_t>(args.integer("pages", 16, 16)) * kPage;
    auto rt = make_runtime("arena=memfd,arena_size=64M");

    json report;
    report["benchmark"] = "mirror_invalidate";
    report["rounds"] = rounds;
    report["bytes_per_round"] = len;
    report["unit"] = "µs from the munmap/madvise call; medians";
    for (const bool clear : {false, true}) {
        const auto raw = raw_event_read(rounds, len, clear);
        const auto ours = runtime_callback(*rt, rounds, len, clear);
        const char* name = clear ? "clear_madvise_dontneed" : "unmap_munmap";
        report[name] = {{"runtime_to_callback", summary(ours)},
                        {"limit_bare_uffd_event_read", summary(raw)},
                        {"ratio_callback_vs_event_read",
                         round3(median(ours.callback_us) / median(raw.callback_us))}};
    }
    std::printf("%s\n", report.dump(2).c_str());
}
