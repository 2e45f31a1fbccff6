// cuda:N in a build without CUDA: always refused, saying so.
#include "devmem/backend.hpp"

namespace uhmm::devmem {

Result<std::unique_ptr<ArenaBackend>> make_cuda_backend(const ArenaSpec& spec, std::string* why) {
    if (why) {
        *why = "cuda:" + std::to_string(spec.index) +
               ": this build has no CUDA support (meson did not find the CUDA runtime; -Dcuda=enabled to require it)";
    }
    return errno_code(ENODEV);
}

}  // namespace uhmm::devmem
