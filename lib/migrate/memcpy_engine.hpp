// The memcpy engine: copies through the arena's runtime-private CPU mapping,
// synchronously, in the submitting thread.
#pragma once

#include <memory>

#include "migrate/engine_base.hpp"
#include "migrate/fence_state.hpp"
#include "migrate/guarded_copy.hpp"

namespace uhmm::migrate::detail {

Result<std::unique_ptr<CopyEngine>> make_memcpy_engine(const devmem::ArenaView& view,
                                                       const EngineOptions& options);

// The copy itself, shared with the io_uring engine's CPU path (hugetlb writes).
void cpu_copy(std::byte* arena_base, Direction dir, const CopyOp& op) noexcept;
// The same copy guarded (guarded_copy.hpp): a fault in op.host's range ends it
// with EFAULT/EIO and the bytes done. Only where guarded_copy_ready() said so,
// with the fault signals unblocked (FaultsUnblocked).
GuardedOutcome cpu_copy_guarded(std::byte* arena_base, Direction dir, const CopyOp& op) noexcept;
// The fence outcome of a guarded copy of op `index`.
void complete_guarded(FenceState& fence, std::size_t index, const GuardedOutcome& o) noexcept;

}  // namespace uhmm::migrate::detail
