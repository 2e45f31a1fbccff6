// Which libuhmm_preload.so CMD gets (see run.hpp): the one named by --preload
// or $UHMM_PRELOAD_LIB, so that an hmmctl copied away from its build or
// install tree can still run programs, else the one seen from hmmctl's own
// path (/proc/self/exe): the build tree first, so that a build runs its own
// library, then the installed places. UHMM_INSTALL_LIBDIR comes from meson
// (prefix/libdir).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include <uhmm/fd.hpp>

#include "errors.hpp"
#include "run.hpp"

#ifndef UHMM_INSTALL_LIBDIR
#error "meson defines UHMM_INSTALL_LIBDIR (tools/hmmctl/meson.build)"
#endif
#ifndef UHMM_LIBDIR
#error "meson defines UHMM_LIBDIR (tools/hmmctl/meson.build)"
#endif

namespace hmmctl {

namespace {

// `path` made absolute, after checking that it opens for reading and is a
// regular file (the dynamic loader would only skip it with a warning, and CMD
// would run without uhmm). `from` says where the path came from.
std::string readable_file(const std::string& path, const std::string& from) {
    if (path.empty()) fail(from + " is empty: expected the path of libuhmm_preload.so");
    uhmm::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) fail(from + " " + path + ": " + std::strerror(errno));
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) fail(from + " " + path + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) fail(from + " " + path + " is not a regular file (expected libuhmm_preload.so)");
    char real[PATH_MAX];
    if (!::realpath(path.c_str(), real)) fail(from + " " + path + ": " + std::strerror(errno));
    return real;
}

}  // namespace

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

std::string preload_library(const std::optional<std::string>& option) {
    std::string path;
    if (option) {
        path = readable_file(*option, "--preload");
    } else if (const char* env = std::getenv("UHMM_PRELOAD_LIB"); env && *env) {
        path = readable_file(env, "UHMM_PRELOAD_LIB");
    } else {
        std::string looked;
        const auto found = find_preload_library(&looked);
        if (!found)
            fail("cannot find libuhmm_preload.so (looked in " + looked +
                 "; name it with --preload PATH or UHMM_PRELOAD_LIB)");
        path = *found;
    }
    // The loader splits LD_PRELOAD at spaces and colons, with no escape.
    if (path.find_first_of(" :") != std::string::npos)
        fail(path + " cannot be preloaded: LD_PRELOAD splits paths at spaces and colons");
    return path;
}

}  // namespace hmmctl
