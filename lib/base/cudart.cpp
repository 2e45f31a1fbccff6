// CUDA's runtime library, loaded on first use (see cudart.hpp).
#include "base/cudart.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace uhmm::base {

namespace {

#define UHMM_STRINGIFY(x) #x
#define UHMM_EXPANDED_NAME(x) UHMM_STRINGIFY(x)

// libcudart.so.<major>: CUDART_VERSION is major * 1000 + minor * 10. A
// function, not a namespace-scope string: the preload library's constructor
// may get here before this file's static initialisers have run.
std::string soname() { return "libcudart.so." + std::to_string(CUDART_VERSION / 1000); }

void* open_library(const std::string& library, std::string& tried) {
    if (void* h = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
    tried = ::dlerror();
    const char* home = std::getenv("CUDA_HOME");
    for (const char* dir : {home, static_cast<const char*>(UHMM_CUDA_LIBDIR_FALLBACK)}) {
        if (dir == nullptr || *dir == '\0') continue;
        const std::string lib64 = std::string(dir) + (std::string(dir).ends_with("lib64") ? "" : "/lib64");
        if (void* h = ::dlopen((lib64 + "/" + library).c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
    }
    return nullptr;
}

struct Loaded {
    Cudart table;
    bool ok = false;
    std::string why;
};

Loaded load() {
    Loaded l;
    const std::string library = soname();
    std::string tried;
    void* h = open_library(library, tried);
    if (h == nullptr) {
        l.why = "cannot load the CUDA runtime (" + library + "): " + tried;
        return l;
    }
#define UHMM_CUDART_LOOKUP(name)                                                                 \
    l.table.name = reinterpret_cast<decltype(&::name)>(::dlsym(h, UHMM_EXPANDED_NAME(name)));    \
    if (l.table.name == nullptr) {                                                               \
        l.why = library + " lacks " UHMM_EXPANDED_NAME(name);                                    \
        return l;                                                                                \
    }
    UHMM_CUDART_FUNCTIONS(UHMM_CUDART_LOOKUP)
#undef UHMM_CUDART_LOOKUP
    l.ok = true;   // the library stays loaded for the process's life
    return l;
}

}  // namespace

const Cudart* cudart(std::string* why) noexcept {
    static const Loaded* loaded = [] {
        try {
            return new Loaded(load());   // never destroyed: callbacks may run at exit
        } catch (...) {
            return static_cast<Loaded*>(nullptr);
        }
    }();
    if (loaded == nullptr) {
        if (why) *why = "cannot load the CUDA runtime: out of memory";
        return nullptr;
    }
    if (!loaded->ok) {
        if (why) *why = loaded->why;
        return nullptr;
    }
    return &loaded->table;
}

}  // namespace uhmm::base
