// uhmm::MigrateResult — what one migration request did, page by page.
#pragma once

#include <cstddef>
#include <cstdint>
#include <system_error>

namespace uhmm {

enum class Target : std::uint8_t { device, host };

// Counted in 4 KiB pages, as copy_to_device's contract has it: partial
// failure is normal, and each page is in exactly one of migrated /
// already_there / failed.
struct MigrateResult {
    std::size_t requested = 0;
    std::size_t migrated = 0;
    std::size_t already_there = 0;
    std::size_t failed = 0;       // stayed where they were (arena full, copy error, busy, range gone)
    std::uint64_t bytes = 0;      // bytes copied (never-touched pages cost none)
    double seconds = 0;
    std::error_code error;        // why the first page failed, when failed > 0

    void add(const MigrateResult& o) noexcept {
        requested += o.requested;
        migrated += o.migrated;
        already_there += o.already_there;
        failed += o.failed;
        bytes += o.bytes;
        if (!error) error = o.error;
    }
};

}  // namespace uhmm
