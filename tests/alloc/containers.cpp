// Standard containers on uhmm::allocator and pmr containers on
// uhmm::memory_resource: they grow and shrink in managed memory, their
// contents survive a trip of every managed range to the device (and the CPU
// faults that bring it home), and the allocator's equality and propagation
// keep memory with its runtime.
#include <catch2/catch.hpp>

#include <algorithm>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <memory_resource>
#include <numeric>
#include <scoped_allocator>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <uhmm/allocator.hpp>
#include <uhmm/memory_resource.hpp>

#include "heap_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

template <class T>
using Vector = std::vector<T, uhmm::allocator<T>>;
using String = std::basic_string<char, std::char_traits<char>, uhmm::allocator<char>>;

struct alignas(64) Line {
    std::uint64_t v[8];
};
struct alignas(4096) Page {
    std::uint64_t first, last;
};

using Traits = std::allocator_traits<uhmm::allocator<int>>;
static_assert(Traits::propagate_on_container_copy_assignment::value);
static_assert(Traits::propagate_on_container_move_assignment::value);
static_assert(Traits::propagate_on_container_swap::value);
static_assert(!Traits::is_always_equal::value);
static_assert(std::is_same_v<Traits::rebind_alloc<double>, uhmm::allocator<double>>);
static_assert(!std::is_default_constructible_v<uhmm::allocator<int>>);   // a runtime is explicit
static_assert(std::is_nothrow_copy_constructible_v<uhmm::allocator<int>>);
static_assert(std::is_convertible_v<uhmm::allocator<int>, uhmm::allocator<Line>>);   // rebinding
static_assert(!std::is_convertible_v<Runtime&, uhmm::allocator<int>>);               // explicit

// Every managed range to the device; every page then holds no CPU copy.
void all_to_device(Runtime& rt) {
    migrate_every_range(rt, Target::device);
    for (const auto& r : rt.ranges()) CHECK(r.pages[static_cast<int>(PageState::host)] == 0);
}

std::size_t device_pages(const Runtime& rt) {
    std::size_t n = 0;
    for (const auto& r : rt.ranges()) n += r.pages[static_cast<int>(PageState::device)];
    return n;
}

}  // namespace

TEST_CASE("allocators are equal when they share a heap, across value types and runtimes") {
    auto rt1 = make_runtime();
    auto rt2 = make_runtime();
    uhmm::allocator<int> a(*rt1), b(rt1->heap());
    uhmm::allocator<Line> rebound(a);
    CHECK(a == b);
    CHECK(rebound == a);
    CHECK(&rebound.heap() == &rt1->heap());
    CHECK(&rebound.runtime() == rt1.get());
    uhmm::allocator<int> other(*rt2);
    CHECK(a != other);
    Heap second(*rt1);
    CHECK(a != uhmm::allocator<int>(second));   // another heap of the same runtime

    uhmm::memory_resource m1(*rt1), m1b(rt1->heap()), m2(*rt2);
    CHECK(m1 == m1b);
    CHECK(m1 != m2);
    CHECK(!m1.is_equal(*std::pmr::new_delete_resource()));
    CHECK(!std::pmr::new_delete_resource()->is_equal(m1));
}

TEST_CASE("a vector grows and shrinks in managed memory and keeps its elements through the device") {
    auto rt = make_runtime();
    Vector<std::uint64_t> v{uhmm::allocator<std::uint64_t>(*rt)};
    for (std::uint64_t i = 0; i < 1'000'000; ++i) v.push_back(i * 3);
    CHECK(rt->heap().owns(v.data()));
    CHECK(rt->manages(v.data(), v.size() * sizeof v[0]));
    all_to_device(*rt);
    CHECK(device_pages(*rt) > 0);
    std::uint64_t bad = 0;
    for (std::uint64_t i = 0; i < v.size(); ++i) bad += v[i] != i * 3;
    CHECK(bad == 0);
    CHECK(rt->stats().device_faults > 0);

    v.resize(1000);
    v.shrink_to_fit();
    CHECK(v.capacity() == 1000);
    CHECK(rt->heap().owns(v.data()));
    CHECK(rt->heap().stats().large_ranges == 0);   // the 8 MB buffer went back
    for (std::uint64_t i = 0; i < v.size(); ++i) bad += v[i] != i * 3;
    CHECK(bad == 0);
}

TEST_CASE("deque, list and unordered_map keep their contents through the device") {
    auto rt = make_runtime();
    uhmm::allocator<int> alloc(*rt);
    std::deque<std::uint64_t, uhmm::allocator<std::uint64_t>> dq(alloc);
    std::list<Line, uhmm::allocator<Line>> lines(alloc);
    using Map = std::unordered_map<int, std::uint64_t, std::hash<int>, std::equal_to<int>,
                                   uhmm::allocator<std::pair<const int, std::uint64_t>>>;
    Map map(0, std::hash<int>(), std::equal_to<int>(), alloc);
    // Shadows in ordinary memory say what the managed ones must hold.
    std::deque<std::uint64_t> dq_shadow;
    std::list<std::uint64_t> lines_shadow;
    std::unordered_map<int, std::uint64_t> map_shadow;
    for (int i = 0; i < 50'000; ++i) {
        const auto v = static_cast<std::uint64_t>(i);
        if (i % 2) dq.push_back(v), dq_shadow.push_back(v);
        else dq.push_front(v), dq_shadow.push_front(v);
        if (i % 10 == 0) lines.push_back(Line{{v, 1, 2, 3, 4, 5, 6, v + 7}}), lines_shadow.push_back(v);
        map.emplace(i, v * 7);
        map_shadow.emplace(i, v * 7);
    }
    // Shrink them too: freed nodes and blocks go back to the heap.
    for (int i = 0; i < 10'000; ++i) {
        dq.pop_front(), dq_shadow.pop_front();
        map.erase(i * 5), map_shadow.erase(i * 5);
    }
    lines.remove_if([](const Line& l) { return l.v[0] % 20 == 0; });
    lines_shadow.remove_if([](std::uint64_t v) { return v % 20 == 0; });
    for (const Line& l : lines) CHECK(reinterpret_cast<std::uintptr_t>(&l) % alignof(Line) == 0);
    CHECK(rt->heap().owns(&dq.front()));
    CHECK(rt->heap().owns(&lines.front()));
    CHECK(rt->heap().owns(&*map.begin()));

    all_to_device(*rt);
    CHECK(std::equal(dq.begin(), dq.end(), dq_shadow.begin(), dq_shadow.end()));
    CHECK(std::equal(lines.begin(), lines.end(), lines_shadow.begin(), lines_shadow.end(),
                     [](const Line& l, std::uint64_t v) { return l.v[0] == v && l.v[7] == v + 7; }));
    CHECK(map.size() == map_shadow.size());
    std::size_t bad = 0;
    for (const auto& [k, v] : map_shadow) {
        const auto it = map.find(k);
        bad += it == map.end() || it->second != v;
    }
    CHECK(bad == 0);
    CHECK(rt->stats().device_faults > 0);
}

TEST_CASE("over-aligned elements keep their alignment") {
    auto rt = make_runtime();
    Vector<Line> lines{uhmm::allocator<Line>(*rt)};
    Vector<Page> pages{uhmm::allocator<Page>(*rt)};
    std::list<Page, uhmm::allocator<Page>> listed{uhmm::allocator<Page>(*rt)};
    for (std::uint64_t i = 0; i < 300; ++i) {
        lines.push_back(Line{{i, 0, 0, 0, 0, 0, 0, i}});
        pages.push_back(Page{i, ~i});
        listed.push_back(Page{i, ~i});
        CHECK(reinterpret_cast<std::uintptr_t>(lines.data()) % 64 == 0);
        CHECK(reinterpret_cast<std::uintptr_t>(pages.data()) % 4096 == 0);
        CHECK(reinterpret_cast<std::uintptr_t>(&listed.back()) % 4096 == 0);
    }
    all_to_device(*rt);
    std::size_t bad = 0;
    for (std::uint64_t i = 0; i < 300; ++i) bad += lines[i].v[7] != i || pages[i].last != ~i;
    for (const Page& p : listed) bad += p.last != ~p.first;
    CHECK(bad == 0);
}

TEST_CASE("allocate_shared puts the object and its control block in the heap") {
    auto rt = make_runtime();
    const auto objects = rt->heap().stats().small_objects;
    {
        auto sp = std::allocate_shared<Line>(uhmm::allocator<Line>(*rt), Line{{1, 2, 3, 4, 5, 6, 7, 8}});
        CHECK(rt->heap().owns(sp.get()));
        CHECK(reinterpret_cast<std::uintptr_t>(sp.get()) % 64 == 0);
        CHECK(rt->heap().stats().small_objects == objects + 1);
        all_to_device(*rt);
        std::weak_ptr<Line> weak = sp;   // the control block, on the device, updated by the CPU
        CHECK(sp->v[7] == 8);
        CHECK(weak.lock() == sp);
    }
    CHECK(rt->heap().stats().small_objects == objects);
}

TEST_CASE("move assignment across runtimes takes the allocator and the buffer") {
    auto rt1 = make_runtime();
    auto rt2 = make_runtime();
    Vector<int> a(1000, 1, uhmm::allocator<int>(*rt1));
    Vector<int> b(5000, 2, uhmm::allocator<int>(*rt2));
    const int* buffer = b.data();
    a = std::move(b);
    CHECK(a.get_allocator() == uhmm::allocator<int>(*rt2));
    CHECK(a.data() == buffer);   // O(1): nothing copied
    CHECK(rt2->heap().owns(a.data()));
    CHECK(a.size() == 5000);
    CHECK(rt1->heap().stats().small_objects == 0);   // a's old buffer went back to rt1

    Vector<int> c(10, 3, uhmm::allocator<int>(*rt1));
    c = a;   // copy assignment takes the allocator too
    CHECK(c.get_allocator() == a.get_allocator());
    CHECK(rt2->heap().owns(c.data()));

    Vector<int> d(7, 4, uhmm::allocator<int>(*rt1));
    const int* d_buffer = d.data();
    d.swap(c);   // and swap
    CHECK(d.get_allocator() == uhmm::allocator<int>(*rt2));
    CHECK(c.get_allocator() == uhmm::allocator<int>(*rt1));
    CHECK(c.data() == d_buffer);
    CHECK(d.size() == 5000);
}

TEST_CASE("a scoped allocator puts the inner strings in the heap too") {
    auto rt = make_runtime();
    using Outer = std::scoped_allocator_adaptor<uhmm::allocator<String>>;
    std::vector<String, Outer> v{Outer(uhmm::allocator<String>(*rt))};
    for (int i = 0; i < 100; ++i) v.emplace_back(std::string(100 + i, static_cast<char>('a' + i % 26)).c_str());
    for (const auto& s : v) CHECK(rt->heap().owns(s.data()));
    all_to_device(*rt);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < v.size(); ++i)
        bad += std::string_view(v[i]) != std::string(100 + i, static_cast<char>('a' + i % 26));
    CHECK(bad == 0);
}

TEST_CASE("pmr containers sit on the resource and on pools upstreamed to it") {
    auto rt = make_runtime();
    uhmm::memory_resource managed(*rt);
    std::pmr::unsynchronized_pool_resource pool(&managed);
    std::pmr::synchronized_pool_resource shared_pool(&managed);

    std::pmr::vector<std::uint64_t> direct(&managed);
    std::pmr::map<int, std::pmr::string> names(&pool);
    std::pmr::vector<std::pmr::string> words(&shared_pool);
    for (int i = 0; i < 20'000; ++i) {
        direct.push_back(static_cast<std::uint64_t>(i) * 11);
        names.emplace(i, std::pmr::string(std::to_string(i) + " is a number long enough to leave SSO", &pool));
        if (i % 4 == 0) words.emplace_back(std::string(40, static_cast<char>('A' + i % 26)));
    }
    for (int i = 0; i < 20'000; i += 3) names.erase(i);
    direct.resize(5000);
    direct.shrink_to_fit();
    CHECK(rt->heap().owns(direct.data()));
    CHECK(rt->heap().owns(names.begin()->second.data()));
    CHECK(rt->heap().owns(words.front().data()));

    all_to_device(*rt);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < direct.size(); ++i) bad += direct[i] != i * 11;
    for (int i = 0; i < 20'000; ++i) {
        const auto it = names.find(i);
        if (i % 3 == 0) bad += it != names.end();
        else bad += it == names.end() || std::string_view(it->second) != std::to_string(i) + " is a number long enough to leave SSO";
    }
    for (std::size_t i = 0; i < words.size(); ++i) bad += std::string_view(words[i]) != std::string(40, static_cast<char>('A' + (i * 4) % 26));
    CHECK(bad == 0);
    CHECK(rt->stats().device_faults > 0);
}
