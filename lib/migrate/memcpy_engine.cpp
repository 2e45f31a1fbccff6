// The memcpy engine: the fallback when io_uring is unusable, the native path
// for NUMA (CPU-coherent) arenas, and the reference the benchmarks compare
// against.
//
// It copies in submit() and returns a signalled fence, so the fence model is
// the same as the asynchronous engines' and callers need no special case. It
// cannot report EFAULT: a host range that is not mapped crashes the process,
// as memcpy would.
#include "migrate/memcpy_engine.hpp"

#include <cstring>

#include "migrate/fence_state.hpp"

namespace uhmm::migrate::detail {

void cpu_copy(std::byte* arena_base, Direction dir, const CopyOp& op) noexcept {
    std::byte* arena = arena_base + op.arena_offset;
    if (dir == Direction::to_device)
        std::memcpy(arena, op.host, op.len);
    else
        std::memcpy(op.host, arena, op.len);
}

namespace {

class MemcpyEngine final : public EngineBase {
public:
    MemcpyEngine(const devmem::ArenaView& view, AnonRegion staging, std::size_t slot_bytes,
                 std::size_t slots)
        : EngineBase(view), region_(std::move(staging)) {
        staging_.reset(region_.bytes(), slot_bytes, slots);
    }

    EngineKind kind() const noexcept override { return EngineKind::memcpy; }
    std::string_view name() const noexcept override { return "memcpy"; }

    Fence submit(Direction dir, std::span<const CopyOp> ops) override {
        auto fence = make_fence_state(ops.size());
        for (std::size_t i = 0; i < ops.size(); ++i) {
            if (auto ec = check(ops[i])) {
                fence->complete(i, 0, ec);
                continue;
            }
            cpu_copy(view_.base, dir, ops[i]);
            fence->complete(i, ops[i].len, {});
        }
        return Fence(std::move(fence));
    }

private:
    AnonRegion region_;
};

}  // namespace

Result<std::unique_ptr<CopyEngine>> make_memcpy_engine(const devmem::ArenaView& view,
                                                       const EngineOptions& options) {
    if (view.base == nullptr) return std::errc::not_supported;   // cuda arenas have no CPU mapping
    auto region = AnonRegion::create(options.staging_slots * options.staging_slot_bytes);
    if (!region) return region.error();
    return std::unique_ptr<CopyEngine>(std::make_unique<MemcpyEngine>(
        view, std::move(*region), options.staging_slot_bytes, options.staging_slots));
}

}  // namespace uhmm::migrate::detail
