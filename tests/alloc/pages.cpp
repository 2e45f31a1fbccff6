// What the heap costs the address space and the device: many small objects
// share a few chunks (a few mappings), allocating and freeing never brings a
// device page home, and emptied spans, runs and chunks go back.
#include <catch2/catch.hpp>

#include <random>
#include <set>
#include <vector>

#include "heap_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

TEST_CASE("200,000 small objects take a handful of mappings") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    constexpr std::size_t kObjects = 200'000;
    std::vector<Object> objects;
    objects.reserve(kObjects);   // the test's own memory, mapped before counting
    std::mt19937_64 rng(7);
    const std::size_t maps_before = mapping_count();

    for (std::size_t i = 0; i < kObjects; ++i) {
        const std::size_t size = 8 + rng() % 600;
        auto p = heap.allocate(size);
        REQUIRE(p.ok());
        objects.push_back({*p, size, 16, i});
    }
    const std::size_t maps_after = mapping_count();
    const HeapStats s = heap.stats();
    INFO("mappings " << maps_before << " -> " << maps_after << ", chunks " << s.chunks << ", spans " << s.spans);
    CHECK(maps_after - maps_before < 16);
    CHECK(s.chunks <= 4);
    CHECK(s.small_objects == kObjects);
    CHECK(rt->ranges().size() == s.chunks);

    for (const auto& o : objects) heap.deallocate(o.p, o.size);
    CHECK(heap.stats().small_objects == 0);
    CHECK(heap.stats().small_bytes == 0);
}

TEST_CASE("allocating and freeing never brings a device page home") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    std::mt19937_64 rng(11);
    std::vector<Object> kept;
    for (std::uint64_t i = 0; i < 3000; ++i) {
        const std::size_t size = 64 + rng() % 2000;
        auto p = heap.allocate(size);
        REQUIRE(p.ok());
        kept.push_back({*p, size, 16, i});
        fill_object(*p, size, i);
    }
    REQUIRE(migrate_every_range(*rt, Target::device) > 0);
    const RuntimeStats before = rt->stats();

    // Churn: fresh objects between and after the device-resident ones, half
    // of those freed, spans emptied and retired.
    std::vector<Object> churn;
    for (int round = 0; round < 4; ++round) {
        for (std::uint64_t i = 0; i < 20000; ++i) {
            const std::size_t size = 16 + rng() % 3000;
            auto p = heap.allocate(size);
            REQUIRE(p.ok());
            churn.push_back({*p, size, 16, 0});
        }
        std::shuffle(churn.begin(), churn.end(), rng);
        for (const auto& o : churn) heap.deallocate(o.p, o.size);
        churn.clear();
    }
    std::shuffle(kept.begin(), kept.end(), rng);
    for (std::size_t i = 0; i < kept.size() / 2; ++i) heap.deallocate(kept[i].p, kept[i].size);
    kept.erase(kept.begin(), kept.begin() + static_cast<std::ptrdiff_t>(kept.size() / 2));

    const RuntimeStats after = rt->stats();
    CHECK(after.device_faults == before.device_faults);
    CHECK(after.pages_to_host == before.pages_to_host);
    std::size_t not_on_device = 0;
    for (const auto& o : kept) {
        for (auto page = page_of(o.p); page < addr_of(o.p) + o.size; page += kPage)
            not_on_device += *rt->state(reinterpret_cast<void*>(page)) != PageState::device;
    }
    CHECK(not_on_device == 0);
    std::string first;
    CHECK(damaged(kept, &first) == 0);   // now they come home
    INFO(first);
    CHECK(rt->stats().device_faults > after.device_faults);
    for (const auto& o : kept) heap.deallocate(o.p, o.size);
    CHECK(heap.stats().small_objects == 0);
}

TEST_CASE("emptied spans keep their pages for reuse until trim() gives them back") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    // 256-byte objects: 256 to a 64 KiB span; five spans' worth, all touched.
    std::vector<Object> objects;
    for (std::uint64_t i = 0; i < 5 * 256; ++i) {
        auto p = heap.allocate(256);
        REQUIRE(p.ok());
        objects.push_back({*p, 256, 16, i});
        fill_object(*p, 256, i);
    }
    std::set<std::uintptr_t> pages;
    for (const auto& o : objects) pages.insert(page_of(o.p));
    REQUIRE(pages.size() == 5 * 16);
    const HeapStats full = heap.stats();
    CHECK(full.spans == 5);
    CHECK(full.dirty_bytes == 0);

    for (const auto& o : objects) heap.deallocate(o.p, o.size);
    heap.flush_thread_cache();   // the last few wait there for reuse
    const HeapStats empty = heap.stats();
    CHECK(empty.cached_objects == 0);
    // One empty span stays with its class; the other four went back to the
    // chunk, their pages kept (dirty) for the next span or run.
    CHECK(empty.spans == 1);
    CHECK(empty.cached_spans == 1);
    CHECK(empty.dirty_bytes == 4 * 16 * kPage);
    CHECK(empty.pages_returned == full.pages_returned);
    const auto dropped = [&] {
        std::size_t none = 0;
        for (auto page : pages) none += *rt->state(reinterpret_cast<void*>(page)) == PageState::none;
        return none;
    };
    CHECK(dropped() == 0);

    heap.trim();
    const HeapStats trimmed = heap.stats();
    CHECK(trimmed.dirty_bytes == 0);
    CHECK(trimmed.pages_returned - full.pages_returned == 4 * 16);
    CHECK(eventually([&] { return dropped() == 4 * 16; }));
    heap.trim();   // nothing left: a no-op
    CHECK(heap.stats().pages_returned == trimmed.pages_returned);
}

TEST_CASE("a new span is carved on dirty pages before fresh ones") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    constexpr std::size_t kSize = 200 * KiB;
    auto a = heap.allocate(kSize);
    auto b = heap.allocate(kSize);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    heap.deallocate(*a, kSize);
    CHECK(heap.stats().dirty_bytes == kSize);
    // 512-byte objects: their span lands on the lowest free pages, a's.
    auto c = heap.allocate(512);
    REQUIRE(c.ok());
    CHECK(reinterpret_cast<std::uintptr_t>(*c) >= reinterpret_cast<std::uintptr_t>(*a));
    CHECK(reinterpret_cast<std::uintptr_t>(*c) < reinterpret_cast<std::uintptr_t>(*a) + kSize);
    CHECK(heap.stats().dirty_bytes < kSize);
    CHECK(heap.stats().pages_returned == 0);
    heap.deallocate(*c, 512);
    heap.deallocate(*b, kSize);
}

TEST_CASE("more than 8 MiB of emptied pages go back without trim()") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    constexpr std::size_t kSize = 512 * KiB, kCount = 20;   // 10 MiB
    std::vector<void*> objects;
    for (std::size_t i = 0; i < kCount; ++i) {
        auto p = heap.allocate(kSize);
        REQUIRE(p.ok());
        fill_object(*p, kSize, i);
        objects.push_back(*p);
    }
    std::size_t freed = 0;
    for (void* p : objects) {
        heap.deallocate(p, kSize);
        freed += kSize;
        const HeapStats s = heap.stats();
        INFO("freed " << freed << ", dirty " << s.dirty_bytes << ", returned " << s.pages_returned);
        CHECK(s.dirty_bytes <= 8 * MiB);
        CHECK(s.dirty_bytes + s.pages_returned * kPage == freed);
    }
    CHECK(heap.stats().pages_returned > 0);
    CHECK(eventually([&] {
        std::size_t none = 0;
        for (void* p : objects) none += try_count_state(*rt, p, kSize, PageState::none).value_or(0);
        return none == heap.stats().pages_returned;
    }));
}

TEST_CASE("a freed medium object gives its pages back on trim()") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    constexpr std::size_t kSize = 200 * KiB;
    auto p = heap.allocate(kSize);
    REQUIRE(p.ok());
    fill_object(*p, kSize, 1);
    const HeapStats held = heap.stats();
    CHECK(held.runs == 1);
    CHECK(held.run_bytes == kSize);
    CHECK(count_state(*rt, *p, kSize, PageState::host) == kSize / kPage);
    heap.deallocate(*p, kSize);
    CHECK(heap.stats().runs == 0);
    CHECK(heap.stats().dirty_bytes == kSize);
    heap.trim();
    CHECK(heap.stats().pages_returned - held.pages_returned == kSize / kPage);
    CHECK(heap.stats().dirty_bytes == 0);
    CHECK(eventually([&] { return try_count_state(*rt, *p, kSize, PageState::none) == kSize / kPage; }));
}

TEST_CASE("emptied chunks go back to the runtime, all but one") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    // 900 KiB runs: 36 to a chunk; 100 of them need three chunks.
    std::vector<void*> runs;
    for (int i = 0; i < 100; ++i) {
        auto p = heap.allocate(900 * KiB);
        REQUIRE(p.ok());
        runs.push_back(*p);
    }
    CHECK(heap.stats().chunks == 3);
    CHECK(rt->ranges().size() == 3);
    for (void* p : runs) heap.deallocate(p, 900 * KiB);
    CHECK(heap.stats().chunks == 1);
    CHECK(rt->ranges().size() == 1);
    CHECK(heap.stats().small_objects == 0);
}
