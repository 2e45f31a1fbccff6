// The heap's refusals, and the allocator's and memory resource's exceptions
// for them: bad alignments, sizes nothing can hold. A refusal leaves
// nothing behind.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <memory_resource>
#include <new>
#include <stdexcept>
#include <vector>

#include <uhmm/allocator.hpp>
#include <uhmm/memory_resource.hpp>

#include "heap_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

constexpr std::size_t kHuge = std::size_t{1} << 60;

void require_nothing_held(Runtime& rt) {
    rt.heap().flush_thread_cache();
    const HeapStats s = rt.heap().stats();
    CHECK(s.small_objects == 0);
    CHECK(s.small_bytes == 0);
    CHECK(s.large_ranges == 0);
    CHECK(s.runs == 0);
    CHECK(s.spans == s.cached_spans);   // at most the one empty span a class keeps
    CHECK(rt.ranges().size() == s.chunks);   // no range but the heap's chunks
}

}  // namespace

TEST_CASE("an alignment that is not a power of two is EINVAL") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    for (std::size_t align : {std::size_t{0}, std::size_t{3}, std::size_t{24}, std::size_t{4097}}) {
        auto p = heap.allocate(64, align);
        INFO("alignment " << align);
        REQUIRE(!p.ok());
        CHECK(p.error() == std::errc::invalid_argument);
    }
    uhmm::memory_resource mr(*rt);
    CHECK_THROWS_AS(mr.allocate(8, 3), std::bad_alloc);
    require_nothing_held(*rt);
}

TEST_CASE("sizes and alignments nothing can hold are ENOMEM") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    auto big = heap.allocate(kHuge);
    REQUIRE(!big.ok());
    CHECK(big.error() == std::errc::not_enough_memory);
    auto max = heap.allocate(std::numeric_limits<std::size_t>::max());
    REQUIRE(!max.ok());
    CHECK(max.error() == std::errc::not_enough_memory);
    auto aligned = heap.allocate(64, std::size_t{1} << 62);
    REQUIRE(!aligned.ok());
    CHECK(aligned.error() == std::errc::not_enough_memory);
    require_nothing_held(*rt);
}

TEST_CASE("the allocator throws bad_array_new_length on overflow and bad_alloc on refusal") {
    auto rt = make_runtime();
    uhmm::allocator<std::uint64_t> words(*rt);
    CHECK_THROWS_AS(words.allocate(std::numeric_limits<std::size_t>::max() / 4), std::bad_array_new_length);
    uhmm::allocator<char> bytes(*rt);
    CHECK_THROWS_AS(bytes.allocate(kHuge), std::bad_alloc);
    std::vector<std::uint64_t, uhmm::allocator<std::uint64_t>> v(words);
    CHECK_THROWS_AS(v.reserve(v.max_size() + 1), std::length_error);
    CHECK_THROWS_AS(v.reserve(v.max_size()), std::bad_alloc);
    CHECK(v.capacity() == 0);
    uhmm::memory_resource mr(*rt);
    CHECK_THROWS_AS(mr.allocate(kHuge), std::bad_alloc);
    require_nothing_held(*rt);
}

TEST_CASE("a zero-byte request gets a distinct object") {
    auto rt = make_runtime();
    Heap& heap = rt->heap();
    auto a = heap.allocate(0), b = heap.allocate(0);
    REQUIRE((a.ok() && b.ok()));
    CHECK(*a != *b);
    CHECK(heap.owns(*a));
    heap.deallocate(*a, 0);
    heap.deallocate(*b, 0);
    CHECK(heap.stats().bad_frees == 0);
    require_nothing_held(*rt);
}
