// What the suites that run programs share (tests/preload, tests/hmmctl): a
// private directory removed with everything in it, and argv/envp arrays.
#pragma once

#include <ftw.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace uhmm::test {

// mkdtemp under $TMPDIR (or /tmp) as <prefix>-XXXXXX; path() is empty when
// that failed.
class TempDir {
public:
    explicit TempDir(const std::string& prefix) {
        const char* tmp = std::getenv("TMPDIR");
        std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
        if (::mkdtemp(templ.data())) path_ = templ;
    }
    ~TempDir() {
        if (!path_.empty())
            ::nftw(path_.c_str(), [](const char* p, const struct stat*, int, FTW*) { return ::remove(p); }, 16,
                   FTW_DEPTH | FTW_PHYS);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

// NULL-terminated pointers into `strings`, for execve (valid while they are).
inline std::vector<char*> c_strings(std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (auto& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

}  // namespace uhmm::test
