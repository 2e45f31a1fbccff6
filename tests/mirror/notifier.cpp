// mirror::Notifier and NotifierRegistry: which notifiers an invalidation
// reaches, the read_begin / read_retry protocol under concurrent
// invalidations (real threads, a device table checked against the truth),
// non-blockable refusal and retry, and removal while a callback runs.
#include <catch2/catch.hpp>

#include <uhmm/mirror.hpp>

#include <atomic>
#include <chrono>
#include <latch>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

using namespace uhmm::mirror;
using namespace std::chrono_literals;

namespace {

constexpr std::uintptr_t kPage = 4096;
constexpr std::uintptr_t kBase = 0x7f0000000000;

// Records every call; optionally refuses non-blockable ones while busy.
struct Recorder : Notifier {
    std::mutex m;
    std::vector<Invalidation> calls;
    std::vector<std::uint64_t> seqs;
    std::atomic<bool> busy{false};

    bool invalidate(const Invalidation& inv, std::uint64_t seq) noexcept override {
        if (busy.load() && !inv.blockable) return false;
        std::lock_guard lock(m);
        calls.push_back(inv);
        seqs.push_back(seq);
        return true;
    }
    std::size_t count() {
        std::lock_guard lock(m);
        return calls.size();
    }
};

Invalidation inv(std::uintptr_t start, std::uintptr_t end, Event e = Event::clear, bool blockable = true) {
    return Invalidation{start, end, e, blockable, nullptr};
}

}  // namespace

TEST_CASE("insert refuses bad intervals and double insertion; remove of a stranger is a no-op") {
    NotifierRegistry reg;
    Recorder a, b;
    CHECK(reg.insert(a, kBase + 1, kPage) == std::errc::invalid_argument);
    CHECK(reg.insert(a, kBase, 0) == std::errc::invalid_argument);
    CHECK(reg.insert(a, kBase, 100) == std::errc::invalid_argument);
    CHECK(reg.insert(a, ~std::uintptr_t{0} & ~(kPage - 1), 2 * kPage) == std::errc::invalid_argument);
    CHECK(reg.empty());
    REQUIRE(!reg.insert(a, kBase, 4 * kPage));
    CHECK(!reg.empty());
    CHECK(reg.insert(a, kBase, kPage) == std::errc::device_or_resource_busy);
    NotifierRegistry other;
    CHECK(other.insert(a, kBase, kPage) == std::errc::device_or_resource_busy);
    other.remove(a);   // not its registry: nothing happens
    CHECK(a.inserted());
    reg.remove(b);
    CHECK(reg.size() == 1);
    reg.remove(a);
    CHECK(!a.inserted());
    CHECK(reg.size() == 0);
    CHECK(reg.empty());
    CHECK(reg.invalidate(inv(kBase, kBase + kPage)) == NotifierRegistry::Outcome::done);
    CHECK(a.count() == 0);
}

TEST_CASE("an invalidation reaches exactly the notifiers it overlaps, in address order") {
    NotifierRegistry reg;
    Recorder low, mid, far, touching, big;
    REQUIRE(!reg.insert(low, kBase, 4 * kPage));                  // [0, 4)
    REQUIRE(!reg.insert(mid, kBase + 2 * kPage, 4 * kPage));      // [2, 6): overlaps low
    REQUIRE(!reg.insert(touching, kBase + 6 * kPage, kPage));     // [6, 7): ends where the next starts
    REQUIRE(!reg.insert(far, kBase + 1000 * kPage, kPage));
    REQUIRE(!reg.insert(big, kBase - 512 * kPage, 600 * kPage));  // starts far below, reaches [.., 88)
    CHECK(reg.size() == 5);

    CHECK(reg.invalidate(inv(kBase + 3 * kPage, kBase + 6 * kPage, Event::unmap)) ==
          NotifierRegistry::Outcome::done);
    CHECK(low.count() == 1);
    CHECK(mid.count() == 1);
    CHECK(big.count() == 1);   // found although it starts 512 pages before the range
    CHECK(touching.count() == 0);
    CHECK(far.count() == 0);
    CHECK(low.calls[0].start == kBase + 3 * kPage);   // the invalidation as given, not clipped
    CHECK(low.calls[0].event == Event::unmap);
    // Address order: big (lowest start), then low, then mid — seqs grow.
    CHECK(big.seqs[0] < low.seqs[0]);
    CHECK(low.seqs[0] < mid.seqs[0]);
    CHECK(low.seqs[0] % 2 == 1);

    CHECK(reg.watched(kBase + 6 * kPage, kBase + 7 * kPage));
    CHECK(!reg.watched(kBase + 88 * kPage, kBase + 1000 * kPage));
    CHECK(reg.watched(kBase + 87 * kPage, kBase + 88 * kPage));
    for (auto* n : {&low, &mid, &far, &touching, &big}) reg.remove(*n);
}

TEST_CASE("read_retry sees every invalidation that began after read_begin") {
    NotifierRegistry reg;
    Recorder n;
    REQUIRE(!reg.insert(n, kBase, 8 * kPage));
    const auto s0 = n.read_begin();
    CHECK(s0 % 2 == 0);
    CHECK(!n.read_retry(s0));
    (void)reg.invalidate(inv(kBase + 9 * kPage, kBase + 10 * kPage));   // not ours
    CHECK(!n.read_retry(s0));
    (void)reg.invalidate(inv(kBase + 7 * kPage, kBase + 9 * kPage));    // ours
    CHECK(n.read_retry(s0));
    const auto s1 = n.read_begin();
    CHECK(s1 != s0);
    CHECK(s1 % 2 == 0);
    CHECK(!n.read_retry(s1));
    reg.remove(n);
}

TEST_CASE("read_retry already fails while the callback that cleared the entry has not returned") {
    // The window a sequence bumped only at the end would leave open: the
    // callback has dropped the device entry and released the device lock,
    // but has not returned. A device thread that snapshotted before must
    // still be told to retry, or it would publish the stale snapshot.
    struct Pausing : Notifier {
        std::mutex device;
        std::latch cleared{1}, go{1};
        bool invalidate(const Invalidation&, std::uint64_t) noexcept override {
            { std::lock_guard g(device); }
            cleared.count_down();
            go.wait();
            return true;
        }
    } n;
    NotifierRegistry reg;
    REQUIRE(!reg.insert(n, kBase, kPage));
    const auto seq = n.read_begin();
    std::thread inval([&] { (void)reg.invalidate(inv(kBase, kBase + kPage)); });
    n.cleared.wait();
    {
        std::lock_guard g(n.device);
        CHECK(n.read_retry(seq));
    }
    n.go.count_down();
    inval.join();
    reg.remove(n);
}

TEST_CASE("read_begin waits while a callback runs; remove waits for it too") {
    struct Slow : Notifier {
        std::latch entered{1}, release{1};
        bool invalidate(const Invalidation&, std::uint64_t) noexcept override {
            entered.count_down();
            release.wait();
            return true;
        }
    } n;
    NotifierRegistry reg;
    REQUIRE(!reg.insert(n, kBase, kPage));
    std::thread inval([&] { (void)reg.invalidate(inv(kBase, kBase + kPage)); });
    n.entered.wait();
    std::atomic<bool> begun{false}, removed{false};
    std::thread reader([&] {
        (void)n.read_begin();
        begun = true;
    });
    std::thread remover([&] {
        reg.remove(n);
        removed = true;
    });
    std::this_thread::sleep_for(50ms);
    CHECK(!begun.load());
    CHECK(!removed.load());
    n.release.count_down();
    inval.join();
    reader.join();
    remover.join();
    CHECK(begun.load());
    CHECK(removed.load());
    CHECK(!n.inserted());
}

TEST_CASE("a window keeps its notifiers invalidating until it ends; a refused one ends at once") {
    NotifierRegistry reg;
    Recorder in, out, refuses;
    REQUIRE(!reg.insert(in, kBase, 2 * kPage));
    REQUIRE(!reg.insert(out, kBase + 4 * kPage, kPage));
    const std::uint64_t in_seq = in.read_begin(), out_seq = out.read_begin();
    {
        NotifierRegistry::Window w;
        REQUIRE(reg.start(inv(kBase, kBase + 2 * kPage, Event::migrate), w) == NotifierRegistry::Outcome::done);
        CHECK(in.count() == 1);   // the callback ran at the start
        CHECK(in.read_retry(in_seq));
        CHECK(!out.read_retry(out_seq));   // not overlapped: untouched
        std::atomic<bool> begun{false};
        std::thread reader([&] {
            (void)in.read_begin();
            begun = true;
        });
        std::this_thread::sleep_for(50ms);
        CHECK(!begun.load());   // the change is still being made
        w.end();
        reader.join();
        CHECK(begun.load());
        w.end();   // twice is harmless
    }
    const std::uint64_t settled = in.read_begin();
    CHECK(settled % 2 == 0);
    CHECK(!in.read_retry(settled));

    // A refusal ends the window: nothing is left invalidating.
    REQUIRE(!reg.insert(refuses, kBase + 2 * kPage, kPage));
    refuses.busy = true;
    NotifierRegistry::Window w;
    CHECK(reg.start(inv(kBase, kBase + 3 * kPage, Event::migrate, false), w) ==
          NotifierRegistry::Outcome::would_block);
    const std::uint64_t after = in.read_begin();   // returns at once
    CHECK(after % 2 == 0);
    reg.remove(refuses);   // would wait forever on a window left open
    for (auto* n : {&in, &out}) reg.remove(*n);
}

TEST_CASE("a non-blockable invalidation may be refused; later notifiers are not called; a retry succeeds") {
    NotifierRegistry reg;
    Recorder first, refuses, after;
    REQUIRE(!reg.insert(first, kBase, kPage));
    REQUIRE(!reg.insert(refuses, kBase + kPage, kPage));
    REQUIRE(!reg.insert(after, kBase + 2 * kPage, kPage));
    refuses.busy = true;
    const auto range = inv(kBase, kBase + 3 * kPage, Event::migrate, false);
    CHECK(reg.invalidate(range) == NotifierRegistry::Outcome::would_block);
    CHECK(first.count() == 1);
    CHECK(refuses.count() == 0);
    CHECK(after.count() == 0);
    // A blockable invalidation is never refused (this recorder only refuses
    // non-blockable ones, as the contract says).
    CHECK(reg.invalidate(inv(kBase, kBase + 3 * kPage)) == NotifierRegistry::Outcome::done);
    CHECK(refuses.count() == 1);
    refuses.busy = false;
    CHECK(reg.invalidate(range) == NotifierRegistry::Outcome::done);
    CHECK(refuses.count() == 2);
    CHECK(after.count() == 2);
    for (auto* n : {&first, &refuses, &after}) reg.remove(*n);
}

TEST_CASE("the read_begin / lock / read_retry protocol leaves no stale entry under concurrent invalidations",
          "[concurrency]") {
    // A device mirrors `pages` values. Writers change the truth of a page,
    // then invalidate it; device threads snapshot the truth without the
    // device lock and publish it under the lock only when read_retry allows.
    // At the end every entry the device holds must equal the truth.
    static constexpr std::size_t pages = 64;
    static constexpr std::uint64_t kInvalid = ~std::uint64_t{0};
    struct Device : Notifier {
        std::mutex lock;
        std::vector<std::uint64_t> table = std::vector<std::uint64_t>(pages, kInvalid);
        std::atomic<std::uint64_t> invalidations{0};
        bool invalidate(const Invalidation& inv, std::uint64_t) noexcept override {
            std::lock_guard g(lock);
            for (std::uintptr_t a = std::max(inv.start, start()); a < std::min(inv.end, end()); a += kPage)
                table[(a - start()) / kPage] = kInvalid;
            invalidations.fetch_add(1, std::memory_order_relaxed);
            return true;
        }
    } dev;
    std::vector<std::atomic<std::uint64_t>> truth(pages);
    NotifierRegistry reg;
    REQUIRE(!reg.insert(dev, kBase, pages * kPage));
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> published{0}, retries{0};
    std::vector<std::thread> ts;
    for (int w = 0; w < 2; ++w) {
        ts.emplace_back([&, w] {
            std::mt19937_64 rng(w + 1);
            for (int i = 0; i < 20000; ++i) {
                const std::size_t p = rng() % pages;
                truth[p].fetch_add(1);
                (void)reg.invalidate(inv(kBase + p * kPage, kBase + (p + 1) * kPage, Event::clear));
            }
        });
    }
    for (int d = 0; d < 2; ++d) {
        ts.emplace_back([&, d] {
            std::mt19937_64 rng(100 + d);
            while (!stop.load(std::memory_order_relaxed)) {
                const std::size_t p = rng() % pages;
                for (;;) {
                    const auto seq = dev.read_begin();
                    const std::uint64_t seen = truth[p].load();
                    std::lock_guard g(dev.lock);
                    if (dev.read_retry(seq)) {
                        retries.fetch_add(1, std::memory_order_relaxed);
                        continue;
                    }
                    dev.table[p] = seen;
                    published.fetch_add(1, std::memory_order_relaxed);
                    break;
                }
            }
        });
    }
    ts[0].join();
    ts[1].join();
    stop = true;
    ts[2].join();
    ts[3].join();
    std::size_t stale = 0, valid = 0;
    for (std::size_t p = 0; p < pages; ++p) {
        if (dev.table[p] == kInvalid) continue;
        ++valid;
        stale += dev.table[p] != truth[p].load();
    }
    INFO("published " << published.load() << ", retries " << retries.load() << ", valid at the end " << valid);
    CHECK(stale == 0);
    CHECK(dev.invalidations.load() == 40000);
    CHECK(published.load() > 0);
    reg.remove(dev);
}
