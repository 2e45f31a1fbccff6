// cuda_category(): CUDA runtime errors as std::error_code, so that "no GPU"
// travels through Result<T> like any errno and its message() is CUDA's own
// text. Defined in every build; without CUDA it only names the number.
#include <uhmm/copy_engine.hpp>

#include <string>

#include "uhmm_build_config.hpp"

#if UHMM_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace uhmm::migrate {

namespace {

class CudaCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "cuda"; }
    std::string message(int ev) const override {
#if UHMM_HAVE_CUDA
        const auto e = static_cast<cudaError_t>(ev);
        return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
#else
        return "CUDA error " + std::to_string(ev);
#endif
    }
};

}  // namespace

const std::error_category& cuda_category() noexcept {
    static const CudaCategory c;
    return c;
}

}  // namespace uhmm::migrate
