// uhmm::Heap's allocate/deallocate against glibc malloc/free, measured in
// the same run on the same sequences (ns per operation, an operation being
// one allocate or one free; ratios, never assertions):
//
//  small_random: sizes 16..256 B; each step picks one of `slots` (4096) cells
//    at random, frees its object if it holds one, else allocates one there.
//  small_batch: `batch` (10,000) objects of 16..256 B allocated, then all freed
//    in the order they came, `batch_rounds` times.
//  large: sizes 1..8 MiB, four live at a time (each step frees the oldest and
//    allocates a new one); the memory is never touched, so this is the cost of
//    the bookkeeping: a managed range per object for the heap (mmap and
//    userfaultfd registration) against whatever glibc does at that size.
// Each with 1 and 2 threads on one heap (each thread its own sequence); the
// median of `reps` runs. ratio = heap ns/op ÷ malloc ns/op (below 1: faster).
//
// Prints one JSON object. Arguments (key=value, or UHMM_BENCH_<KEY>):
//   ops=2000000 (small_random steps per thread) batch=10000 batch_rounds=100
//   large_ops=2000 reps=5 threads=1,2 config=... (RuntimeConfig keys)
//   quick (a tenth of everything)
#include <cstdlib>
#include <functional>

#include <uhmm/heap.hpp>

#include "../runtime/common.hpp"

using namespace bench;

namespace {

struct Sizes {
    std::vector<std::uint32_t> size;   // per step
    std::vector<std::uint32_t> cell;   // per step (small_random)
};

Sizes make_steps(std::size_t n, std::size_t lo, std::size_t hi, std::size_t cells, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    Sizes s;
    s.size.resize(n);
    s.cell.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        s.size[i] = static_cast<std::uint32_t>(lo + rng() % (hi - lo + 1));
        s.cell[i] = static_cast<std::uint32_t>(rng() % cells);
    }
    return s;
}

// Either allocator, behind the same two calls (inlined into each loop).
struct HeapAlloc {
    uhmm::Heap* heap;
    void* get(std::size_t n) const {
        auto p = heap->allocate(n);
        if (!p) {
            std::fprintf(stderr, "bench: heap allocate(%zu): %s\n", n, p.error().message().c_str());
            std::exit(1);
        }
        return *p;
    }
    void put(void* p, std::size_t n) const { heap->deallocate(p, n); }
};
struct Malloc {
    void* get(std::size_t n) const {
        void* p = std::malloc(n);
        if (!p) std::exit(1);
        return p;
    }
    void put(void* p, std::size_t) const { std::free(p); }
};

// One thread's run of each pattern; returns the operations done.
template <class A>
std::size_t small_random(const A& a, const Sizes& s, std::size_t cells) {
    std::vector<void*> ptr(cells, nullptr);
    std::vector<std::uint32_t> len(cells, 0);
    std::size_t ops = 0;
    for (std::size_t i = 0; i < s.size.size(); ++i) {
        const auto c = s.cell[i];
        if (ptr[c]) {
            a.put(ptr[c], len[c]);
            ptr[c] = nullptr;
        } else {
            ptr[c] = a.get(s.size[i]);
            len[c] = s.size[i];
        }
        ++ops;
    }
    for (std::size_t c = 0; c < cells; ++c)
        if (ptr[c]) a.put(ptr[c], len[c]), ++ops;
    return ops;
}

template <class A>
std::size_t small_batch(const A& a, const Sizes& s, std::size_t rounds) {
    std::vector<void*> ptr(s.size.size());
    for (std::size_t r = 0; r < rounds; ++r) {
        for (std::size_t i = 0; i < ptr.size(); ++i) ptr[i] = a.get(s.size[i]);
        for (std::size_t i = 0; i < ptr.size(); ++i) a.put(ptr[i], s.size[i]);
    }
    return 2 * rounds * ptr.size();
}

template <class A>
std::size_t large(const A& a, const Sizes& s) {
    constexpr std::size_t kLive = 4;
    void* ptr[kLive] = {};
    std::size_t len[kLive] = {}, ops = 0;
    for (std::size_t i = 0; i < s.size.size(); ++i) {
        const std::size_t c = i % kLive;
        if (ptr[c]) a.put(ptr[c], len[c]), ++ops;
        ptr[c] = a.get(s.size[i]);
        len[c] = s.size[i];
        ++ops;
    }
    for (std::size_t c = 0; c < kLive; ++c)
        if (ptr[c]) a.put(ptr[c], len[c]), ++ops;
    return ops;
}

// `threads` threads run `body(thread)` at once; the median over `reps` of
// (wall time, total operations).
struct Figure {
    double ns_per_op = 0;   // wall time × threads ÷ operations: one thread's cost of one operation
    double ops_per_s = 0;   // all threads together
};

Figure measure(int threads, int reps, const std::function<std::size_t(int)>& body) {
    std::vector<double> ns, rate;
    for (int r = 0; r < reps; ++r) {
        std::atomic<std::size_t> ops{0};
        std::atomic<int> ready{0};
        std::atomic<bool> go{false};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
                ready.fetch_add(1);
                while (!go.load()) std::this_thread::yield();
                ops.fetch_add(body(t));
            });
        while (ready.load() < threads) std::this_thread::yield();
        const auto t0 = Clock::now();
        go = true;
        for (auto& th : pool) th.join();
        const double s = secs(t0, Clock::now());
        ns.push_back(s * 1e9 * threads / static_cast<double>(ops.load()));
        rate.push_back(static_cast<double>(ops.load()) / s);
    }
    return {median(ns), median(rate)};
}

json compare(const Figure& heap, const Figure& libc) {
    return {{"heap", {{"ns_per_op", round3(heap.ns_per_op)}, {"ops_per_s", std::round(heap.ops_per_s)}}},
            {"malloc", {{"ns_per_op", round3(libc.ns_per_op)}, {"ops_per_s", std::round(libc.ops_per_s)}}},
            {"ratio", ratio(heap.ns_per_op, libc.ns_per_op)}};
}

json to_json(const uhmm::HeapStats& s) {
    return {{"chunks", s.chunks},           {"large_ranges", s.large_ranges},     {"small_objects", s.small_objects},
            {"spans", s.spans},             {"cached_spans", s.cached_spans},     {"runs", s.runs},
            {"dirty_bytes", s.dirty_bytes}, {"pages_returned", s.pages_returned}, {"bad_frees", s.bad_frees}};
}

}  // namespace

int main(int argc, char** argv) {
    Args args(argc, argv);
    require_uffd();
    const auto ops = static_cast<std::size_t>(args.integer("ops", 2'000'000, 200'000));
    const auto batch = static_cast<std::size_t>(args.integer("batch", 10'000, 10'000));
    const auto batch_rounds = static_cast<std::size_t>(args.integer("batch_rounds", 100, 10));
    const auto large_ops = static_cast<std::size_t>(args.integer("large_ops", 2'000, 200));
    const int reps = static_cast<int>(args.integer("reps", 5, 3));
    const auto thread_counts = args.list("threads", "1,2");
    constexpr std::size_t kCells = 4096;

    std::string text = "arena=memfd,arena_size=64M";
    if (const auto extra = args.get("config", ""); !extra.empty()) text += "," + extra;
    auto rt = make_runtime(text);
    uhmm::Heap& heap = rt->heap();
    const HeapAlloc h{&heap};
    const Malloc m;

    json report;
    report["benchmark"] = "alloc";
    report["config"] = rt->config().to_string();
    report["unit"] = "ns per allocate or free (one thread's cost); ops/s over all threads";
    report["args"] = {{"ops", ops}, {"batch", batch}, {"batch_rounds", batch_rounds}, {"large_ops", large_ops},
                      {"reps", reps}};
    const auto s0 = rt->stats();

    for (const auto& word : thread_counts) {
        const int threads = std::atoi(word.c_str());
        if (threads <= 0) continue;
        std::vector<Sizes> random, batches, bigs;
        for (int t = 0; t < threads; ++t) {
            random.push_back(make_steps(ops, 16, 256, kCells, 1 + t));
            batches.push_back(make_steps(batch, 16, 256, 1, 100 + t));
            bigs.push_back(make_steps(large_ops, 1u << 20, 8u << 20, 1, 200 + t));
        }
        // A warm-up of each, so that neither side pays its first growth.
        (void)small_random(h, random[0], kCells);
        (void)small_random(m, random[0], kCells);
        const std::string key = "threads_" + word;
        report["small_random"][key] = compare(
            measure(threads, reps, [&](int t) { return small_random(h, random[t], kCells); }),
            measure(threads, reps, [&](int t) { return small_random(m, random[t], kCells); }));
        report["small_batch"][key] = compare(
            measure(threads, reps, [&](int t) { return small_batch(h, batches[t], batch_rounds); }),
            measure(threads, reps, [&](int t) { return small_batch(m, batches[t], batch_rounds); }));
        report["large"][key] = compare(measure(threads, reps, [&](int t) { return large(h, bigs[t]); }),
                                       measure(threads, reps, [&](int t) { return large(m, bigs[t]); }));
    }
    report["heap_after"] = to_json(heap.stats());
    report["stats_delta"] = delta(s0, rt->stats());   // nothing touched: no faults expected
    std::printf("%s\n", report.dump(2).c_str());
    return 0;
}
