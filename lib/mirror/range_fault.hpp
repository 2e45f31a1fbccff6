// range_fault's core (include/uhmm/mirror.hpp says what it does): the
// runtime hands it the managed ranges, its pagemap descriptor and its view
// of the mappings.
#pragma once

#include <cstdint>
#include <system_error>

#include <uhmm/mirror.hpp>

#include "space/address_space.hpp"
#include "space/mapping_view.hpp"

namespace uhmm::mirror::detail {

struct PageSource {
    const space::AddressSpace* space = nullptr;   // managed ranges (nullptr: none)
    int pagemap_fd = -1;                           // /proc/self/pagemap
    std::uint16_t owner = 0;                       // dev_private_owner's id in the page table (0: none)
    space::MappingView* view = nullptr;            // the mappings (nullptr: one of its own per call)
    // Every mprotect of managed memory is reported (Runtime::protect): the
    // view may answer from its cache for intervals inside managed memory.
    bool protection_reported = false;
};

std::error_code range_fault(const PageSource& src, Range& range);

}  // namespace uhmm::mirror::detail
