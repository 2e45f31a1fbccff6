// cuda_category(): CUDA runtime errors as std::error_code, so that "no GPU"
// travels through Result<T> like any errno and its message() is CUDA's own
// text. Defined in every build; without CUDA it only names the number.
#include <uhmm/copy_engine.hpp>

#include <string>

#include "uhmm_build_config.hpp"

#if UHMM_HAVE_CUDA
#include "base/cudart.hpp"
#endif

namespace uhmm::migrate {

namespace {

class CudaCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "cuda"; }
    std::string message(int ev) const override {
#if UHMM_HAVE_CUDA
        // A CUDA error exists only once the library was loaded.
        if (const base::Cudart* cu = base::cudart()) {
            const auto e = static_cast<cudaError_t>(ev);
            return std::string(cu->cudaGetErrorName(e)) + ": " + cu->cudaGetErrorString(e);
        }
#endif
        return "CUDA error " + std::to_string(ev);
    }
};

}  // namespace

const std::error_category& cuda_category() noexcept {
    static const CudaCategory c;
    return c;
}

}  // namespace uhmm::migrate
