// make_copy_engine(): checks the options, picks an engine for the arena, and
// falls back from io_uring to memcpy once, saying so at log=info (a fallback
// the user did not ask about is not worth a line in their program's stderr).
//
// The fallback is only for EngineKind::automatic: a caller that asked for
// io_uring by name gets the reason it cannot have it, not a silent
// substitute.
#include <uhmm/copy_engine.hpp>

#include <atomic>

#include "base/log.hpp"
#include "migrate/cuda_engine.hpp"
#include "migrate/memcpy_engine.hpp"
#include "migrate/uring_engine.hpp"

namespace uhmm::migrate {

namespace {

bool options_ok(const EngineOptions& o) {
    if (o.queue_depth == 0 || o.queue_depth > 4096) return false;
    if (o.staging_slots > 0 && (o.staging_slot_bytes == 0 || o.staging_slot_bytes % devmem::kPageSize != 0))
        return false;
    return o.staging_slots <= 1024;
}

void warn_fallback_once(const UringSupport& s) {
    static std::atomic<bool> said{false};
    if (!said.exchange(true))
        uhmm::log::get().info("copy engine: io_uring unusable ({}); falling back to memcpy", s.reason);
}

}  // namespace

std::string_view to_string(EngineKind kind) noexcept {
    switch (kind) {
        case EngineKind::automatic: return "auto";
        case EngineKind::uring: return "io_uring";
        case EngineKind::memcpy: return "memcpy";
        case EngineKind::cuda: return "cuda";
    }
    return "?";
}

Result<std::unique_ptr<CopyEngine>> make_copy_engine(EngineKind kind, const devmem::ArenaView& view,
                                                     const EngineOptions& options) {
    if (!options_ok(options)) return std::errc::invalid_argument;
    switch (kind) {
        case EngineKind::memcpy:
            return detail::make_memcpy_engine(view, options);
        case EngineKind::cuda:
            return detail::make_cuda_engine(view, options);
        case EngineKind::uring: {
            const auto& s = uring_support();
            if (!s.available) return s.error;
            return detail::make_uring_engine(view, options);
        }
        case EngineKind::automatic:
            break;
    }
    if (view.kind == devmem::ArenaKind::cuda) return detail::make_cuda_engine(view, options);
    if (view.kind == devmem::ArenaKind::numa) return detail::make_memcpy_engine(view, options);
    const auto& s = uring_support();
    if (!s.available) {
        warn_fallback_once(s);
        return detail::make_memcpy_engine(view, options);
    }
    return detail::make_uring_engine(view, options);
}

}  // namespace uhmm::migrate
