// What every engine shares: the arena view, the arena size ops are checked
// against (it grows while the engine lives), the staging pool, and the one
// function that refuses a bad op before anything is copied.
#pragma once

#include <atomic>
#include <cstddef>
#include <system_error>

#include <uhmm/copy_engine.hpp>

#include "migrate/staging.hpp"

namespace uhmm::migrate::detail {

class EngineBase : public CopyEngine {
public:
    explicit EngineBase(const devmem::ArenaView& view) noexcept;

    Result<StagingBuffer> acquire_staging() override { return staging_.acquire(); }
    void set_arena_size(std::size_t size) noexcept override;

protected:
    // EINVAL for a null host or zero length, ERANGE past the arena; empty when
    // the op may go ahead. Checked here, not left to the kernel, because a
    // write past the end of a memfd would silently grow the arena's file.
    std::error_code check(const CopyOp& op) const noexcept;

    devmem::ArenaView view_;
    std::atomic<std::size_t> size_;
    StagingPool staging_;
};

}  // namespace uhmm::migrate::detail
