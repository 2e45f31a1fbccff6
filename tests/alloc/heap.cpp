// uhmm::Heap: objects of every size and alignment land aligned, in managed
// memory, apart from each other, and keep their data through the device;
// deallocate() of anything that is not a live object changes nothing.
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "heap_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

constexpr std::size_t kSizes[] = {1,     7,      16,        17,          100,          128,     129,
                                  500,   1000,   4095,      4096,        5000,         32768,   32769,
                                  65536, 100000, MiB - 1,   MiB,         3 * MiB + 5,  8 * MiB};
constexpr std::size_t kAlignments[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 64 * KiB};

// Two objects per size and alignment below 1 MiB, one per size at 1, 4096
// and 64 KiB above (they are ranges of their own; enough is enough).
std::vector<Object> allocate_all(Heap& heap) {
    std::vector<Object> objects;
    std::uint64_t id = 0;
    for (std::size_t size : kSizes)
        for (std::size_t align : kAlignments) {
            const bool big = size >= MiB;
            if (big && align != 1 && align != 4096 && align != 64 * KiB) continue;
            for (int copy = 0; copy < (big ? 1 : 2); ++copy) {
                auto p = heap.allocate(size, align);
                INFO("allocate(" << size << ", " << align << "): " << p.error().message());
                REQUIRE(p.ok());
                objects.push_back({*p, size, align, id++});
            }
        }
    return objects;
}

void free_all(Heap& heap, std::vector<Object>& objects) {
    for (const auto& o : objects) heap.deallocate(o.p, o.size, o.align);
    objects.clear();
}

}  // namespace

TEST_CASE("objects of every size and alignment are aligned, managed and disjoint") {
    auto rt = make_runtime("arena=memfd,arena_size=256M");
    Heap& heap = rt->heap();
    auto objects = allocate_all(heap);

    for (const auto& o : objects) {
        INFO("object of " << o.size << " bytes at alignment " << o.align << ": " << o.p);
        CHECK(addr_of(o.p) % o.align == 0);
        CHECK(heap.owns(o.p));
        CHECK(heap.owns(static_cast<std::byte*>(o.p) + o.size - 1));
        CHECK(rt->manages(o.p, o.size));
    }
    auto sorted = objects;
    std::sort(sorted.begin(), sorted.end(), [](const Object& a, const Object& b) { return a.p < b.p; });
    for (std::size_t i = 1; i < sorted.size(); ++i) {
        INFO("objects at " << sorted[i - 1].p << " (" << sorted[i - 1].size << " bytes) and " << sorted[i].p);
        REQUIRE(addr_of(sorted[i - 1].p) + sorted[i - 1].size <= addr_of(sorted[i].p));
    }
    // Disjoint in fact, not only on paper: every pattern survives all the writes.
    for (const auto& o : objects) fill_object(o.p, o.size, o.id);
    std::string first;
    CHECK(damaged(objects, &first) == 0);
    INFO(first);

    const HeapStats s = heap.stats();
    // min_range (1 MiB by default) and up: a range each.
    const auto large = static_cast<std::size_t>(
        std::count_if(objects.begin(), objects.end(), [](const Object& o) { return o.size >= MiB; }));
    CHECK(s.large_ranges == large);
    CHECK(s.small_objects == objects.size() - large);
    CHECK(s.chunks >= 1);
    free_all(heap, objects);
}

TEST_CASE("objects keep their data through the device and back") {
    auto rt = make_runtime("arena=memfd,arena_size=256M");
    Heap& heap = rt->heap();
    auto objects = allocate_all(heap);
    for (const auto& o : objects) fill_object(o.p, o.size, o.id);

    REQUIRE(migrate_every_range(*rt, Target::device) > 0);
    for (const auto& o : objects) {
        INFO("object of " << o.size << " bytes at " << o.p);
        REQUIRE(rt->state(o.p).ok());
        CHECK(*rt->state(o.p) == PageState::device);
    }
    const auto before = rt->stats().device_faults;
    std::string first;
    CHECK(damaged(objects, &first) == 0);   // CPU reads bring the pages home
    INFO(first);
    CHECK(rt->stats().device_faults > before);

    // And once more by request, both ways.
    migrate_every_range(*rt, Target::device);
    migrate_every_range(*rt, Target::host);
    CHECK(damaged(objects, &first) == 0);
    free_all(heap, objects);
    const HeapStats s = heap.stats();
    CHECK(s.small_objects == 0);
    CHECK(s.small_bytes == 0);
    CHECK(s.large_ranges == 0);
    CHECK(s.runs == 0);
}

TEST_CASE("a freed slot is given out again before fresh memory") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    auto a = heap.allocate(48), b = heap.allocate(48);
    REQUIRE((a.ok() && b.ok()));
    heap.deallocate(*a, 48);
    auto c = heap.allocate(48);
    REQUIRE(c.ok());
    CHECK(*c == *a);
    heap.deallocate(*b, 48);
    heap.deallocate(*c, 48);
    CHECK(heap.stats().small_objects == 0);
}

TEST_CASE("deallocate of anything but a live object of this heap changes nothing") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    Heap other(*rt);
    std::vector<Object> objects;
    for (std::uint64_t i = 0; i < 64; ++i) {
        const std::size_t size = 16 + i * 40;
        auto p = heap.allocate(size);
        REQUIRE(p.ok());
        objects.push_back({*p, size, 16, i});
        fill_object(*p, size, i);
    }
    auto medium = heap.allocate(200 * KiB);
    auto large = heap.allocate(2 * MiB);
    REQUIRE((medium.ok() && large.ok()));
    auto foreign = other.allocate(64);
    REQUIRE(foreign.ok());
    const HeapStats before = heap.stats();

    int local = 0;
    heap.deallocate(&local, sizeof local);                                     // not managed at all
    heap.deallocate(static_cast<std::byte*>(objects[3].p) + 16, 16);           // inside an object
    heap.deallocate(static_cast<std::byte*>(*medium) + kPage, 4096);           // inside a run
    heap.deallocate(static_cast<std::byte*>(*large) + kPage, 4096);            // inside a large range
    heap.deallocate(*foreign, 64);                                             // another heap's
    heap.deallocate(objects[5].p, objects[5].size);
    heap.deallocate(objects[5].p, objects[5].size);                            // twice

    const HeapStats after = heap.stats();
    CHECK(after.bad_frees == before.bad_frees + 6);
    CHECK(after.small_objects == before.small_objects - 1);
    CHECK(after.large_ranges == before.large_ranges);
    CHECK(other.stats().small_objects == 1);
    objects.erase(objects.begin() + 5);
    std::string first;
    CHECK(damaged(objects, &first) == 0);
    INFO(first);

    for (const auto& o : objects) heap.deallocate(o.p, o.size);
    heap.deallocate(*medium, 200 * KiB);
    heap.deallocate(*large, 2 * MiB);
    other.deallocate(*foreign, 64);
    CHECK(heap.stats().small_objects == 0);
    CHECK(heap.stats().large_ranges == 0);
    CHECK(other.stats().small_objects == 0);
}

TEST_CASE("a heap gives every range back when it goes") {
    auto rt = make_runtime();
    const auto ranges_before = rt->ranges().size();
    {
        Heap heap(*rt);
        REQUIRE(heap.allocate(100).ok());
        REQUIRE(heap.allocate(300 * KiB).ok());
        REQUIRE(heap.allocate(4 * MiB).ok());
        CHECK(rt->ranges().size() == ranges_before + 2);   // one chunk, one large range
    }
    CHECK(rt->ranges().size() == ranges_before);
}
