// The memcpy engine: the fallback when io_uring is unusable, the native path
// for NUMA (CPU-coherent) arenas, and the reference the benchmarks compare
// against.
//
// It copies in submit() and returns a signalled fence, so the fence model is
// the same as the asynchronous engines' and callers need no special case.
// Copies are guarded (guarded_copy.hpp) where the process lets us catch its
// faults: a host range unmapped under the copy is EFAULT for its op. Where it
// does not (the program has its own SIGSEGV handler), a host range that is
// not mapped crashes the process, as memcpy would.
#include "migrate/memcpy_engine.hpp"

#include <cstring>
#include <optional>

#include "migrate/fence_state.hpp"
#include "migrate/guarded_copy.hpp"

namespace uhmm::migrate::detail {

void cpu_copy(std::byte* arena_base, Direction dir, const CopyOp& op) noexcept {
    std::byte* arena = arena_base + op.arena_offset;
    if (dir == Direction::to_device)
        std::memcpy(arena, op.host, op.len);
    else
        std::memcpy(op.host, arena, op.len);
}

GuardedOutcome cpu_copy_guarded(std::byte* arena_base, Direction dir, const CopyOp& op) noexcept {
    std::byte* arena = arena_base + op.arena_offset;
    return dir == Direction::to_device ? guarded_copy(arena, op.host, op.len, op.host)
                                       : guarded_copy(op.host, arena, op.len, op.host);
}

void complete_guarded(FenceState& fence, std::size_t index, const GuardedOutcome& o) noexcept {
    fence.complete(index, static_cast<std::uint32_t>(o.bytes), o.error ? errno_code(o.error) : std::error_code{});
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
        const bool guarded = guarded_copy_ready();
        std::optional<FaultsUnblocked> faults;
        if (guarded) faults.emplace();
        for (std::size_t i = 0; i < ops.size(); ++i) {
            const CopyOp& op = ops[i];
            if (auto ec = check(op)) {
                fence->complete(i, 0, ec);
                continue;
            }
            if (!guarded || staging_.slot_of(op.host, op.len)) {
                cpu_copy(view_.base, dir, op);
                fence->complete(i, op.len, {});
                continue;
            }
            complete_guarded(*fence, i, cpu_copy_guarded(view_.base, dir, op));
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
