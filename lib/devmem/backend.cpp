// Choosing a backend from a spec, and what every factory shares.
#include "devmem/backend.hpp"

#include <cstring>

namespace uhmm::devmem {

std::string describe_error(std::string_view what, std::error_code ec) {
    std::string text(what);
    text += ": ";
    text += ec.message();
    if (ec.category() == std::generic_category()) {
        if (const char* name = ::strerrorname_np(ec.value())) {
            text += " (";
            text += name;
            text += ")";
        }
    }
    return text;
}

std::error_code map_initial(ArenaBackend& backend, const ArenaSpec& spec, std::string* why) {
    const std::size_t chunks = spec.initial / kChunkSize;
    for (std::size_t i = 0; i < chunks; ++i) {
        if (auto ec = backend.map_chunk(i)) {
            if (why) *why = describe_error("mapping chunk " + std::to_string(i) + " of " + std::to_string(chunks), ec);
            return ec;
        }
    }
    return {};
}

Result<std::unique_ptr<ArenaBackend>> make_backend(const ArenaSpec& spec, std::string* why) {
    switch (spec.backend) {
    case Backend::hugepage: return make_hugetlb_backend(spec, why);
    case Backend::memfd: return make_memfd_backend(spec, false, {}, why);
    case Backend::numa: return make_numa_backend(spec, why);
    case Backend::cuda: return make_cuda_backend(spec, why);
    }
    return errno_code(EINVAL);
}

}  // namespace uhmm::devmem
