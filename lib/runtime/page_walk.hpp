// Walking [addr, addr+len) of managed memory block by block, for calls that
// change or read page entries under the block locks (write_watch.cpp,
// advice.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <system_error>

#include <uhmm/result.hpp>

#include "space/address_space.hpp"

namespace uhmm {

// Calls fn(range, first, last) for the runs of [addr, addr+len) that lie in
// one managed range and one 2 MiB block each, in order; EFAULT (and nothing
// more called) at the first page that is not managed.
template <class Fn>
std::error_code for_each_block(const space::AddressSpace& space, const void* addr, std::size_t len, Fn&& fn) {
    using space::kPage;
    const auto start = reinterpret_cast<std::uintptr_t>(addr) & ~(std::uintptr_t{kPage} - 1);
    const auto end = reinterpret_cast<std::uintptr_t>(addr) + len;
    for (std::uintptr_t a = start; a < end;) {
        space::RangeRef r = space.find(a);
        if (!r) return errno_code(EFAULT);
        const std::size_t first = r->index_of(a);
        const std::size_t in_range = (std::min(end, r->end()) - r->start() + kPage - 1) / kPage;
        const std::size_t last = std::min(r->block_end(first), in_range);
        fn(*r, first, last);
        a = r->address_of(last);
    }
    return {};
}

// Whether every page of [addr, addr+len) is managed (nothing locked).
inline bool all_managed(const space::AddressSpace& space, const void* addr, std::size_t len) {
    return !for_each_block(space, addr, len, [](space::ManagedRange&, std::size_t, std::size_t) {});
}

}  // namespace uhmm
