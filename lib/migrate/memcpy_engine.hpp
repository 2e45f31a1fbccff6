// The memcpy engine: copies through the arena's runtime-private CPU mapping,
// synchronously, in the submitting thread.
#pragma once

#include <memory>

#include "migrate/engine_base.hpp"

namespace uhmm::migrate::detail {

Result<std::unique_ptr<CopyEngine>> make_memcpy_engine(const devmem::ArenaView& view,
                                                       const EngineOptions& options);

// The copy itself, shared with the io_uring engine's CPU path (hugetlb writes).
void cpu_copy(std::byte* arena_base, Direction dir, const CopyOp& op) noexcept;

}  // namespace uhmm::migrate::detail
