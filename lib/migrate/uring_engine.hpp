// The io_uring engine: the arena file as a fixed file, batched READ/WRITE,
// one completion thread per engine.
#pragma once

#include <memory>

#include "migrate/engine_base.hpp"

namespace uhmm::migrate::detail {

// EBADF when the arena fd cannot be registered, ENOTSUP for an arena without
// a file (numa, cuda), or io_uring_queue_init's error.
Result<std::unique_ptr<CopyEngine>> make_uring_engine(const devmem::ArenaView& view,
                                                      const EngineOptions& options);

}  // namespace uhmm::migrate::detail
