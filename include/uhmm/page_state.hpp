// uhmm::PageState — where one 4 KiB page of a managed range lives.
//
//   none      never touched (or dropped by the application): reads as zero
//   host      in RAM, mapped by the CPU
//   migrating write-protected while its copy to the device is in flight:
//             CPU reads go on, CPU writes wait
//   device    in the device-memory arena; the CPU page is gone, and a CPU
//             touch brings it home (migrate_to_ram)
#pragma once

#include <cstdint>

namespace uhmm {

enum class PageState : std::uint8_t { none, host, migrating, device };
const char* to_string(PageState s) noexcept;

}  // namespace uhmm
