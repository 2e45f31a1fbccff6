// Four threads allocate objects of random sizes (slots, runs and large
// ranges), fill each with a pattern of its own, hand some to other threads,
// and free objects (their own or handed over) after checking the pattern,
// while another thread sends every managed range to the device and home
// again and trims the heap (dirty pages dropped while other spans are carved
// next to them). Nothing is corrupted, nothing is refused, and the statistics add
// up to zero at the end. Threads' caches outlive neither their thread nor
// their heap. Run by the TSan build (fewer iterations there).
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "heap_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

constexpr int kWorkers = 4;

std::uint64_t word(std::uint64_t id, std::size_t i) {
    std::uint64_t z = id * 0x9E3779B97F4A7C15ull + i + 1;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    return z ^ (z >> 31);
}

// Whole words of the pattern, then its last bytes.
void fill(void* p, std::size_t size, std::uint64_t id) {
    auto* b = static_cast<std::byte*>(p);
    std::size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        const std::uint64_t w = word(id, i / 8);
        std::memcpy(b + i, &w, 8);
    }
    const std::uint64_t w = word(id, i / 8);
    std::memcpy(b + i, &w, size - i);
}

bool intact(const void* p, std::size_t size, std::uint64_t id) {
    const auto* b = static_cast<const std::byte*>(p);
    std::size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        std::uint64_t w;
        std::memcpy(&w, b + i, 8);
        if (w != word(id, i / 8)) return false;
    }
    const std::uint64_t w = word(id, i / 8);
    return std::memcmp(b + i, &w, size - i) == 0;
}

struct Mailbox {
    std::mutex lock;
    std::vector<Object> items;
};

struct Shared {
    Heap& heap;
    Mailbox boxes[kWorkers];
    std::atomic<std::size_t> corrupt{0}, refused{0}, misaligned{0}, allocated{0}, handed{0};
};

// 70 % up to 512 bytes, 25 % up to 40 KiB, 4 % medium runs, 1 % large ranges.
std::size_t random_size(std::mt19937_64& rng) {
    const auto r = rng() % 100;
    if (r < 70) return 1 + rng() % 512;
    if (r < 95) return 512 + rng() % (40 * KiB);
    if (r < 99) return 40 * KiB + rng() % (300 * KiB);
    return MiB + rng() % MiB;
}

void release(Shared& sh, const Object& o) {
    if (!intact(o.p, o.size, o.id)) sh.corrupt.fetch_add(1);
    sh.heap.deallocate(o.p, o.size, o.align);
}

void worker(Shared& sh, int k, std::size_t iterations) {
    std::mt19937_64 rng(1000 + static_cast<std::uint64_t>(k));
    std::vector<Object> mine;
    for (std::size_t i = 0; i < iterations; ++i) {
        const auto r = rng() % 100;
        if (mine.size() < 64 || (r < 45 && mine.size() < 400)) {
            const std::size_t size = random_size(rng), align = std::size_t{1} << (rng() % 7);
            auto p = sh.heap.allocate(size, align);
            if (!p) {
                sh.refused.fetch_add(1);
                continue;
            }
            if (reinterpret_cast<std::uintptr_t>(*p) % align) sh.misaligned.fetch_add(1);
            const Object o{*p, size, align, (static_cast<std::uint64_t>(k) << 40) | i};
            fill(o.p, o.size, o.id);
            mine.push_back(o);
            sh.allocated.fetch_add(1);
            continue;
        }
        const std::size_t pick = rng() % mine.size();
        const Object o = mine[pick];
        mine[pick] = mine.back();
        mine.pop_back();
        if (r < 65) {   // hand it to another thread, which checks and frees it
            Mailbox& to = sh.boxes[(k + 1 + static_cast<int>(rng() % (kWorkers - 1))) % kWorkers];
            std::lock_guard lock(to.lock);
            to.items.push_back(o);
            sh.handed.fetch_add(1);
        } else {
            release(sh, o);
        }
        if (r % 4 == 0) {   // and free what others handed over
            std::vector<Object> got;
            {
                std::lock_guard lock(sh.boxes[k].lock);
                got.swap(sh.boxes[k].items);
            }
            for (const auto& g : got) release(sh, g);
        }
    }
    for (const auto& o : mine) release(sh, o);
}

}  // namespace

TEST_CASE("threads allocate, hand over and free while every range moves to the device and back") {
    Watchdog dog(240, "heap concurrency");
    auto rt = make_runtime("arena=memfd,arena_size=512M");
    Shared sh{rt->heap(), {}, {}, {}, {}, {}, {}};
    std::atomic<bool> stop{false};
    std::atomic<std::size_t> moved{0}, rounds{0};
    std::thread migrator([&] {
        while (!stop.load()) {
            for (Target to : {Target::device, Target::host}) {
                for (const auto& r : rt->ranges()) {
                    // A range may go (an emptied chunk, a freed large
                    // object) between ranges() and migrate(): then the
                    // call or some pages fail, and that is fine.
                    auto res = rt->migrate(reinterpret_cast<void*>(r.start), r.len, to);
                    if (res) moved.fetch_add(res->migrated);
                }
            }
            rt->heap().trim();   // a purge racing the workers' carving and freeing
            rounds.fetch_add(1);
        }
    });
    const std::size_t iterations = scaled(6000);
    std::vector<std::thread> workers;
    for (int k = 0; k < kWorkers; ++k) workers.emplace_back(worker, std::ref(sh), k, iterations);
    for (auto& t : workers) t.join();
    stop = true;
    migrator.join();
    for (auto& box : sh.boxes)
        for (const auto& o : box.items) release(sh, o);

    INFO("allocated " << sh.allocated.load() << ", handed over " << sh.handed.load() << ", pages moved "
                      << moved.load() << " in " << rounds.load() << " rounds");
    CHECK(sh.corrupt.load() == 0);
    CHECK(sh.refused.load() == 0);
    CHECK(sh.misaligned.load() == 0);
    CHECK(sh.handed.load() > 0);
    CHECK(moved.load() > 0);
    rt->heap().flush_thread_cache();   // the workers' caches emptied when they ended
    const HeapStats s = rt->heap().stats();
    CHECK(s.cached_objects == 0);
    CHECK(s.small_objects == 0);
    CHECK(s.small_bytes == 0);
    CHECK(s.runs == 0);
    CHECK(s.large_ranges == 0);
    CHECK(s.bad_frees == 0);
    CHECK(s.pages_returned > 0);
    CHECK(s.spans == s.cached_spans);
    CHECK(s.chunks >= 1);
    CHECK(rt->ranges().size() == s.chunks);
}

TEST_CASE("a thread's cached slots go back when it ends, and a heap may go before its threads") {
    Watchdog dog(120, "heap thread caches");
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    std::atomic<std::uint64_t> cached_in_thread{0};
    std::thread([&] {
        std::vector<void*> v;
        for (int i = 0; i < 1000; ++i) v.push_back(*heap.allocate(64));
        for (void* p : v) heap.deallocate(p, 64);
        cached_in_thread = heap.stats().cached_objects;
    }).join();
    CHECK(cached_in_thread.load() > 0);   // freed slots waited in the thread's cache...
    HeapStats s = heap.stats();
    CHECK(s.cached_objects == 0);         // ...and went back when it ended
    CHECK(s.small_objects == 0);
    CHECK(s.spans == s.cached_spans);

    // A thread uses a heap that goes while the thread lives, then others.
    auto doomed = std::make_unique<Heap>(*rt);
    std::mutex m;
    std::condition_variable cv;
    int step = 0;
    std::atomic<std::size_t> wrong{0};
    std::thread user([&] {
        void* p = *doomed->allocate(32);
        doomed->deallocate(p, 32);   // now in this thread's cache
        {
            std::unique_lock l(m);
            step = 1;
            cv.notify_all();
            cv.wait(l, [&] { return step == 2; });
        }
        // Five heaps in turn: more than a thread's cache has entries for.
        std::vector<std::unique_ptr<Heap>> heaps;
        for (int i = 0; i < 5; ++i) heaps.push_back(std::make_unique<Heap>(*rt));
        for (int round = 0; round < 3; ++round)
            for (auto& h : heaps) {
                std::vector<void*> v;
                for (int i = 0; i < 50; ++i) v.push_back(*h->allocate(48));
                for (void* q : v) h->deallocate(q, 48);
            }
        for (auto& h : heaps) {
            h->flush_thread_cache();
            const HeapStats hs = h->stats();
            wrong += hs.small_objects + hs.cached_objects + hs.bad_frees;
        }
    });
    {
        std::unique_lock l(m);
        cv.wait(l, [&] { return step == 1; });
        doomed.reset();   // its entry in the thread's cache is cleared, not followed
        step = 2;
        cv.notify_all();
    }
    user.join();
    CHECK(wrong.load() == 0);
    CHECK(rt->heap().stats().bad_frees == 0);
}
