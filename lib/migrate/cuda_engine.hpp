// The CUDA engine: cudaMemcpyAsync on one stream, fences signalled from a
// host function queued behind each batch. Compiled only with CUDA; without
// it the factory answers ENOTSUP.
#pragma once

#include <memory>

#include "migrate/engine_base.hpp"

namespace uhmm::migrate::detail {

// A cuda_category() error (no driver, no GPU, bad device) or the engine.
Result<std::unique_ptr<CopyEngine>> make_cuda_engine(const devmem::ArenaView& view,
                                                     const EngineOptions& options);

}  // namespace uhmm::migrate::detail
