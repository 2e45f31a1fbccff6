// The cuda:N backend: GPU memory from cudaMalloc (built when meson finds CUDA;
// the runtime library is loaded when a cuda:N arena is first made).
//
// A device allocation cannot grow in place, and view().cuda_base must not
// move, so the whole arena_size is allocated on the GPU at creation; chunks
// are then zeroed and handed to the allocator as the arena "grows" (GPU memory
// is committed by cudaMalloc anyway, unlike host memory). There is no file and
// no CPU mapping: view().base is nullptr and copies go through the CUDA copy
// engine, staging through its own pinned host buffers. Without a usable GPU
// (no device, no driver, wrong index) creation fails with CUDA's error name
// and text in `*why`.
#include "base/cudart.hpp"
#include "devmem/backend.hpp"

namespace uhmm::devmem {

namespace {

std::string cuda_text(const base::Cudart& cu, cudaError_t err) {
    return std::string(cu.cudaGetErrorString(err)) + " (" + cu.cudaGetErrorName(err) + ")";
}

std::error_code cuda_code(cudaError_t err) {
    switch (err) {
    case cudaErrorMemoryAllocation: return errno_code(ENOMEM);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable: return errno_code(ENODEV);
    default: return errno_code(EIO);
    }
}

class CudaBackend final : public ArenaBackend {
public:
    CudaBackend(const base::Cudart& cu, int device, void* base, std::string name)
        : cu_(cu), device_(device), base_(base), name_(std::move(name)) {}

    ~CudaBackend() override {
        if (cu_.cudaSetDevice(device_) == cudaSuccess) cu_.cudaFree(base_);
    }

    std::error_code map_chunk(std::size_t index) override {
        cudaError_t err = cu_.cudaSetDevice(device_);
        if (err == cudaSuccess) err = cu_.cudaMemset(static_cast<char*>(base_) + index * kChunkSize, 0, kChunkSize);
        return err == cudaSuccess ? std::error_code{} : cuda_code(err);
    }

    ArenaView view() const override {
        ArenaView v;
        v.kind = ArenaKind::cuda;
        v.cuda_device = device_;
        v.cuda_base = base_;
        return v;
    }

    std::string describe() const override {
        return "GPU memory on cuda:" + std::to_string(device_) + " (" + name_ +
               "), cudaMalloc'd whole at creation";
    }

private:
    const base::Cudart& cu_;
    int device_;
    void* base_;
    std::string name_;
};

}  // namespace

Result<std::unique_ptr<ArenaBackend>> make_cuda_backend(const ArenaSpec& spec, std::string* why) {
    const std::string name = "cuda:" + std::to_string(spec.index);
    std::string load_why;
    const base::Cudart* loaded = base::cudart(&load_why);
    if (loaded == nullptr) {
        if (why) *why = name + ": " + load_why;
        return errno_code(ENODEV);
    }
    const base::Cudart& cu = *loaded;
    auto refuse = [&](const std::string& call, cudaError_t err) -> Result<std::unique_ptr<ArenaBackend>> {
        if (why) *why = name + ": " + call + " failed: " + cuda_text(cu, err);
        return cuda_code(err);
    };
    int count = 0;
    if (cudaError_t err = cu.cudaGetDeviceCount(&count); err != cudaSuccess) return refuse("cudaGetDeviceCount", err);
    if (spec.index >= count) {
        if (why) *why = name + ": no such device (" + std::to_string(count) + " CUDA devices)";
        return errno_code(ENODEV);
    }
    if (cudaError_t err = cu.cudaSetDevice(spec.index); err != cudaSuccess) return refuse("cudaSetDevice", err);
    cudaDeviceProp props{};
    if (cudaError_t err = cu.cudaGetDeviceProperties(&props, spec.index); err != cudaSuccess) {
        return refuse("cudaGetDeviceProperties", err);
    }
    void* base = nullptr;
    if (cudaError_t err = cu.cudaMalloc(&base, spec.size); err != cudaSuccess) {
        return refuse("cudaMalloc(" + std::to_string(spec.size >> 20) + " MiB)", err);
    }
    auto backend = std::make_unique<CudaBackend>(cu, spec.index, base, props.name);
    return finish_backend(std::move(backend), spec, name, why);
}

}  // namespace uhmm::devmem
