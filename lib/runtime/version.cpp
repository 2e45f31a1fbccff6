// Runtime::version(): meson's project version, built in.
#include <uhmm/runtime.hpp>

#include "uhmm_build_config.hpp"

namespace uhmm {

std::string_view Runtime::version() noexcept { return UHMM_VERSION; }

}  // namespace uhmm
