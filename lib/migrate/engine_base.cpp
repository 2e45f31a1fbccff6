// EngineBase: op checks and arena growth, shared by every engine.
#include "migrate/engine_base.hpp"

namespace uhmm::migrate::detail {

EngineBase::EngineBase(const devmem::ArenaView& view) noexcept : view_(view), size_(view.size) {}

void EngineBase::set_arena_size(std::size_t size) noexcept {
    size_.store(size, std::memory_order_release);
}

std::error_code EngineBase::check(const CopyOp& op) const noexcept {
    if (op.host == nullptr || op.len == 0) return std::make_error_code(std::errc::invalid_argument);
    const std::uint64_t size = size_.load(std::memory_order_acquire);
    if (op.arena_offset > size || op.len > size - op.arena_offset)
        return std::make_error_code(std::errc::result_out_of_range);
    return {};
}

}  // namespace uhmm::migrate::detail
