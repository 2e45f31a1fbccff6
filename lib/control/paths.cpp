// Control socket paths (see the header).
#include "control/paths.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>

namespace uhmm::control {

namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? v : "";
}

void add(std::vector<std::string>& dirs, const std::string& d) {
    if (!d.empty() && std::find(dirs.begin(), dirs.end(), d) == dirs.end()) dirs.push_back(d);
}

void add_for_uid(std::vector<std::string>& dirs, uid_t uid) {
    if (uid == 0) add(dirs, "/run/uhmm");
    if (uid == ::getuid() && !env("XDG_RUNTIME_DIR").empty()) add(dirs, env("XDG_RUNTIME_DIR") + "/uhmm");
    add(dirs, "/run/user/" + std::to_string(uid) + "/uhmm");
    add(dirs, "/tmp/uhmm-" + std::to_string(uid));
}

}  // namespace

std::string server_dir() {
    if (auto d = env("UHMM_RUNTIME_DIR"); !d.empty()) return d;
    if (::geteuid() == 0) return "/run/uhmm";
    if (auto x = env("XDG_RUNTIME_DIR"); !x.empty()) return x + "/uhmm";
    return "/tmp/uhmm-" + std::to_string(::geteuid());
}

std::error_code ensure_private_dir(const std::string& dir, std::string* why) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        const int err = errno;
        if (why) *why = "cannot create " + dir + ": " + std::generic_category().message(err);
        return {err, std::generic_category()};
    }
    struct stat st{};
    if (::lstat(dir.c_str(), &st) != 0) {
        const int err = errno;
        if (why) *why = dir + ": " + std::generic_category().message(err);
        return {err, std::generic_category()};
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        if (why) *why = dir + " is not a directory of this user that only it may write to";
        return std::make_error_code(std::errc::operation_not_permitted);
    }
    return {};
}

std::string socket_path(const std::string& dir, pid_t pid) { return dir + "/" + std::to_string(pid) + ".sock"; }

std::optional<uid_t> process_uid(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("Uid:", 0) == 0) return static_cast<uid_t>(std::strtoul(line.c_str() + 4, nullptr, 10));
    }
    return std::nullopt;
}

std::vector<std::string> client_dirs(pid_t pid) {
    std::vector<std::string> dirs;
    add(dirs, env("UHMM_RUNTIME_DIR"));
    if (auto uid = process_uid(pid)) add_for_uid(dirs, *uid);
    return dirs;
}

std::vector<std::string> all_dirs() {
    std::vector<std::string> dirs;
    add(dirs, env("UHMM_RUNTIME_DIR"));
    add_for_uid(dirs, ::getuid());
    if (::geteuid() == 0) {
        // Root may list everyone's: the per-user directories that exist.
        add(dirs, "/run/uhmm");
        for (const char* parent : {"/run/user", "/tmp"}) {
            DIR* d = ::opendir(parent);
            if (!d) continue;
            while (const dirent* e = ::readdir(d)) {
                const std::string name = e->d_name;
                if (std::string(parent) == "/run/user" && name != "." && name != "..")
                    add(dirs, std::string(parent) + "/" + name + "/uhmm");
                else if (name.rfind("uhmm-", 0) == 0)
                    add(dirs, std::string(parent) + "/" + name);
            }
            ::closedir(d);
        }
    }
    return dirs;
}

}  // namespace uhmm::control
