// Where libuhmm_preload.so is, seen from hmmctl's own path (/proc/self/exe):
// the build tree first, so that a build runs its own library, then the
// installed places. UHMM_INSTALL_LIBDIR comes from meson (prefix/libdir).
#include <unistd.h>

#include <climits>
#include <cstdlib>

#include "run.hpp"

#ifndef UHMM_INSTALL_LIBDIR
#error "meson defines UHMM_INSTALL_LIBDIR (tools/hmmctl/meson.build)"
#endif
#ifndef UHMM_LIBDIR
#error "meson defines UHMM_LIBDIR (tools/hmmctl/meson.build)"
#endif

namespace hmmctl {

std::optional<std::string> find_preload_library(std::string* looked) {
    constexpr const char* kName = "libuhmm_preload.so";
    char exe[PATH_MAX];
    const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    std::vector<std::string> candidates;
    if (n > 0) {
        const std::string path(exe, static_cast<std::size_t>(n));
        const std::string dir = path.substr(0, path.rfind('/'));
        candidates.push_back(dir + "/../../lib/preload/" + kName);
        const std::string libdir = UHMM_LIBDIR;
        if (!libdir.empty() && libdir.front() != '/') candidates.push_back(dir + "/../" + libdir + "/" + kName);
    }
    candidates.push_back(std::string(UHMM_INSTALL_LIBDIR) + "/" + kName);
    for (const auto& c : candidates) {
        char real[PATH_MAX];
        if (::access(c.c_str(), R_OK) == 0 && ::realpath(c.c_str(), real)) return std::string(real);
    }
    if (looked) {
        looked->clear();
        for (const auto& c : candidates) *looked += (looked->empty() ? "" : ", ") + c;
    }
    return std::nullopt;
}

}  // namespace hmmctl
