// range_fault's core (include/uhmm/mirror.hpp says what it does): the
// runtime hands it the managed ranges and its pagemap descriptor.
#pragma once

#include <cstdint>
#include <system_error>

#include <uhmm/mirror.hpp>

#include "space/address_space.hpp"

namespace uhmm::mirror::detail {

struct PageSource {
    const space::AddressSpace* space = nullptr;   // managed ranges (nullptr: none)
    int pagemap_fd = -1;                           // /proc/self/pagemap
    std::uint16_t owner = 0;                       // dev_private_owner's id in the page table (0: none)
};

std::error_code range_fault(const PageSource& src, Range& range);

}  // namespace uhmm::mirror::detail
