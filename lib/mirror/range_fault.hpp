// range_fault's core (include/uhmm/mirror.hpp says what it does): the
// runtime hands it the managed ranges, its pagemap descriptor and its view
// of the mappings.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>
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
    // A device is asking (dev_private_owner set): read-only replicas of
    // read-mostly pages are reported to it as device pages, and its read
    // requests of read-mostly host pages without one make one (replicate).
    bool device_reader = false;
    std::function<void(std::uintptr_t, std::uintptr_t)> replicate;
    // Intervals this notifier was advised accessed_by: device pages there
    // are reported in place, whoever owns them, and never brought home.
    const std::vector<std::pair<std::uintptr_t, std::uintptr_t>>* in_place = nullptr;
};

std::error_code range_fault(const PageSource& src, Range& range);

}  // namespace uhmm::mirror::detail
