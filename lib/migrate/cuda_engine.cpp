// The CUDA copy engine (built only when meson found CUDA; the runtime library
// itself is loaded on first use, base/cudart.hpp).
//
// Each batch is a run of cudaMemcpyAsync calls on the engine's stream
// followed by cudaLaunchHostFunc, whose host function completes the batch's
// fence: the stream runs in order, so the function runs after every copy of
// the batch (and of earlier batches). Application pages cannot be pinned
// safely (they may be unmapped or migrated at any time), so copies from or to
// them are pageable copies that the driver stages itself; the engine's own
// staging buffers come from cudaHostAlloc, so copies through them are true
// asynchronous DMA. Host functions run on a CUDA-owned thread and may not
// call CUDA: a fence callback on this engine must not submit.
#include "migrate/cuda_engine.hpp"

#include "uhmm_build_config.hpp"

#if UHMM_HAVE_CUDA

#include <vector>

#include "base/cudart.hpp"
#include "base/log.hpp"
#include "migrate/fence_state.hpp"

namespace uhmm::migrate::detail {

namespace {

std::error_code cuda_error(cudaError_t e) { return {static_cast<int>(e), cuda_category()}; }

// What the host function completes: the ops that were queued successfully.
struct Pending {
    std::shared_ptr<FenceState> fence;
    std::vector<std::pair<std::size_t, std::uint32_t>> ops;   // index, len
};

void CUDART_CB complete_batch(void* arg) {
    std::unique_ptr<Pending> p(static_cast<Pending*>(arg));
    for (auto [index, len] : p->ops) p->fence->complete(index, len, {});
}

class CudaEngine final : public EngineBase {
public:
    CudaEngine(const devmem::ArenaView& view, const base::Cudart& cu) : EngineBase(view), cu_(cu) {}

    std::error_code init(const EngineOptions& options) {
        int count = 0;
        if (auto e = cu_.cudaGetDeviceCount(&count); e != cudaSuccess) return cuda_error(e);
        if (view_.cuda_device < 0 || view_.cuda_device >= count) return cuda_error(cudaErrorInvalidDevice);
        if (auto e = cu_.cudaSetDevice(view_.cuda_device); e != cudaSuccess) return cuda_error(e);
        if (auto e = cu_.cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking); e != cudaSuccess)
            return cuda_error(e);
        const std::size_t bytes = options.staging_slots * options.staging_slot_bytes;
        if (bytes > 0) {
            if (auto e = cu_.cudaHostAlloc(&pinned_, bytes, cudaHostAllocDefault); e != cudaSuccess)
                return cuda_error(e);
            staging_.reset({static_cast<std::byte*>(pinned_), bytes}, options.staging_slot_bytes,
                           options.staging_slots);
        }
        return {};
    }

    ~CudaEngine() override {
        if (stream_) {
            cu_.cudaStreamSynchronize(stream_);   // every host function has run: fences are signalled
            cu_.cudaStreamDestroy(stream_);
        }
        if (pinned_) cu_.cudaFreeHost(pinned_);
    }

    EngineKind kind() const noexcept override { return EngineKind::cuda; }
    std::string_view name() const noexcept override { return "cuda"; }

    Fence submit(Direction dir, std::span<const CopyOp> ops) override {
        auto fence = make_fence_state(ops.size());
        auto pending = std::make_unique<Pending>();
        pending->fence = fence;
        std::vector<std::pair<std::size_t, std::error_code>> failed;
        // The current device is per thread; a submitting thread may be new.
        if (auto e = cu_.cudaSetDevice(view_.cuda_device); e != cudaSuccess) {
            for (std::size_t i = 0; i < ops.size(); ++i) fence->complete(i, 0, cuda_error(e));
            return Fence(std::move(fence));
        }
        auto* dev = static_cast<std::byte*>(view_.cuda_base);
        for (std::size_t i = 0; i < ops.size(); ++i) {
            const CopyOp& op = ops[i];
            if (auto ec = check(op)) {
                failed.emplace_back(i, ec);
                continue;
            }
            const cudaError_t e =
                dir == Direction::to_device
                    ? cu_.cudaMemcpyAsync(dev + op.arena_offset, op.host, op.len, cudaMemcpyHostToDevice, stream_)
                    : cu_.cudaMemcpyAsync(op.host, dev + op.arena_offset, op.len, cudaMemcpyDeviceToHost, stream_);
            if (e != cudaSuccess) failed.emplace_back(i, cuda_error(e));
            else pending->ops.emplace_back(i, op.len);
        }
        for (auto& [i, ec] : failed) fence->complete(i, 0, ec);
        if (!pending->ops.empty()) {
            if (auto e = cu_.cudaLaunchHostFunc(stream_, complete_batch, pending.get()); e == cudaSuccess) {
                pending.release();
            } else {
                // No host function: wait here, then complete with the stream's verdict.
                const cudaError_t s = cu_.cudaStreamSynchronize(stream_);
                for (auto [index, len] : pending->ops)
                    fence->complete(index, s == cudaSuccess ? len : 0, s == cudaSuccess ? std::error_code{} : cuda_error(s));
            }
        }
        return Fence(std::move(fence));
    }

private:
    const base::Cudart& cu_;   // the runtime library, loaded on first use
    cudaStream_t stream_ = nullptr;
    void* pinned_ = nullptr;
};

}  // namespace

Result<std::unique_ptr<CopyEngine>> make_cuda_engine(const devmem::ArenaView& view,
                                                     const EngineOptions& options) {
    if (view.kind != devmem::ArenaKind::cuda) return std::errc::not_supported;
    const base::Cudart* cu = base::cudart();
    if (cu == nullptr) return std::errc::no_such_device;   // the arena said why already
    auto engine = std::make_unique<CudaEngine>(view, *cu);
    if (auto ec = engine->init(options)) return ec;
    return std::unique_ptr<CopyEngine>(std::move(engine));
}

}  // namespace uhmm::migrate::detail

#else  // !UHMM_HAVE_CUDA

namespace uhmm::migrate::detail {

Result<std::unique_ptr<CopyEngine>> make_cuda_engine(const devmem::ArenaView&, const EngineOptions&) {
    return std::errc::not_supported;   // built without CUDA
}

}  // namespace uhmm::migrate::detail

#endif
