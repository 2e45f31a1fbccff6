// Fixtures for the heap's tests: objects with a pattern of their own (so that
// two live objects that overlap, or an object copied to the wrong place,
// show), every managed range sent to the device or home, and /proc/self/maps
// counted. Builds on tests/runtime/runtime_fixture.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <uhmm/heap.hpp>
#include <uhmm/runtime.hpp>

#include "runtime_fixture.hpp"

namespace uhmm::test {

// Byte i of object `id`: differs between objects at almost every offset, and
// along an object at every offset of a 256-byte stretch.
inline std::uint8_t object_byte(std::uint64_t id, std::size_t i) {
    const std::uint64_t h = (id + 1) * 0x9E3779B97F4A7C15ull;
    return static_cast<std::uint8_t>((h >> 29) ^ (i * 7) ^ (i >> 8));
}

inline void fill_object(void* p, std::size_t len, std::uint64_t id) {
    auto* b = static_cast<std::uint8_t*>(p);
    for (std::size_t i = 0; i < len; ++i) b[i] = object_byte(id, i);
}

// Offset of the first byte that is not object `id`'s, or len.
inline std::size_t object_mismatch(const void* p, std::size_t len, std::uint64_t id) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    for (std::size_t i = 0; i < len; ++i)
        if (b[i] != object_byte(id, i)) return i;
    return len;
}

// A live object of a test: where, how big, its alignment and pattern id.
struct Object {
    void* p = nullptr;
    std::size_t size = 0, align = 0;
    std::uint64_t id = 0;
};

// How many objects do not hold their pattern (the first one in `*first`).
inline std::size_t damaged(const std::vector<Object>& objects, std::string* first = nullptr) {
    std::size_t bad = 0;
    for (const auto& o : objects) {
        const std::size_t at = object_mismatch(o.p, o.size, o.id);
        if (at == o.size) continue;
        if (!bad++ && first)
            *first = "object " + std::to_string(o.id) + " (" + std::to_string(o.size) + " bytes) at offset " +
                     std::to_string(at);
    }
    return bad;
}

// Every managed range to `to`; returns the pages that moved. Requires that
// each call starts and no page fails.
inline std::size_t migrate_every_range(Runtime& rt, Target to) {
    std::size_t moved = 0;
    for (const auto& r : rt.ranges()) {
        auto res = rt.migrate(reinterpret_cast<void*>(r.start), r.len, to);
        INFO("migrate range " << r.start << " +" << r.len << ": " << res.error().message());
        REQUIRE(res.ok());
        INFO("failed pages: " << res->failed << " (" << res->error.message() << ")");
        REQUIRE(res->failed == 0);
        moved += res->migrated;
    }
    return moved;
}

// Lines of /proc/self/maps: one per mapping.
inline std::size_t mapping_count() {
    std::ifstream maps("/proc/self/maps");
    std::size_t n = 0;
    for (std::string line; std::getline(maps, line);) ++n;
    return n;
}

inline std::uintptr_t page_of(const void* p) { return addr_of(p) & ~(kPage - 1); }

}  // namespace uhmm::test
