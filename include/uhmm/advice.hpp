// uhmm::Advice — what a program tells the runtime about how it will use a
// range, in CUDA's words (cudaMemAdvise), for Runtime::advise().
//
//   read_mostly         the pages stay on the host and a device reading them
//                       gets a read-only replica in device memory (made when a
//                       device's range_fault reads them, or by prefetch() to
//                       the device). A CPU write to a replicated page takes a
//                       write-protect fault that drops the replica before the
//                       write completes: a device never reads a stale copy.
//   preferred_location  where the pages should live (host or device). The
//                       placement policies honour it: chaos and tier never
//                       move host-preferring pages to the device, and tier
//                       sends device-preferring pages that a CPU fault brought
//                       home back each round (neither counts against
//                       tier_hot). A CPU fault on a device-preferring page
//                       brings (or, first touched, fills) only that page, not
//                       a fault-around window. Explicit migrate() and
//                       prefetch() still move anything.
//   accessed_by         a device (a notifier in Runtime::notifiers()) maps the
//                       pages where they are, without moving them: at once
//                       (Notifier::populate), again after each migrate() or
//                       prefetch() moved them, and its range_fault reports
//                       device pages of any owner in place rather than
//                       bringing them home.
//
// Advice is kept per page, in the runtime's page table: it follows pages that
// mremap moves and ends with the managed range. read_mostly together with
// preferred_location = device is a contradiction (EINVAL): the one keeps pages
// on the host, the other sends them away.
#pragma once

#include <cstdint>

#include <uhmm/migrate_result.hpp>

namespace uhmm {

namespace mirror {
class Notifier;
}

enum class Advice : std::uint8_t {
    set_read_mostly,
    unset_read_mostly,
    set_preferred_location,     // AdviceTarget::location
    unset_preferred_location,
    set_accessed_by,            // AdviceTarget::device
    unset_accessed_by,          // AdviceTarget::device
};

// The rest of an advice: a location (preferred_location) or a device
// (accessed_by); ignored by the others.
struct AdviceTarget {
    Target location = Target::device;
    mirror::Notifier* device = nullptr;
};

// Runtime::advice() reports one byte per page with these bits.
namespace advice_bits {
inline constexpr std::uint8_t read_mostly = 1u << 0;
inline constexpr std::uint8_t prefer_host = 1u << 1;
inline constexpr std::uint8_t prefer_device = 1u << 2;
inline constexpr std::uint8_t accessed_by = 1u << 3;   // by at least one device
inline constexpr std::uint8_t replicated = 1u << 4;    // out only: a read-mostly page with a replica now
}  // namespace advice_bits

}  // namespace uhmm
