// Control socket paths (see the header).
#include "control/paths.hpp"

#include <dirent.h>
#include <fcntl.h>
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

void add(std::vector<SocketDir>& dirs, const std::string& d, uid_t owner) {
    if (d.empty()) return;
    if (std::none_of(dirs.begin(), dirs.end(), [&](const SocketDir& x) { return x.path == d; }))
        dirs.push_back({d, owner});
}

void add_for_uid(std::vector<SocketDir>& dirs, uid_t uid) {
    if (uid == 0) add(dirs, "/run/uhmm", 0);
    if (uid == ::getuid() && !env("XDG_RUNTIME_DIR").empty()) add(dirs, env("XDG_RUNTIME_DIR") + "/uhmm", uid);
    add(dirs, "/run/user/" + std::to_string(uid) + "/uhmm", uid);
    add(dirs, "/tmp/uhmm-" + std::to_string(uid), uid);
}

// The uid a directory's name gives ("1000" of /run/user/1000 or of
// /tmp/uhmm-1000): decimal digits only, or nullopt.
std::optional<uid_t> uid_named(const std::string& text) {
    const auto digit = [](char c) { return c >= '0' && c <= '9'; };
    if (text.empty() || text.size() > 10 || !std::all_of(text.begin(), text.end(), digit)) return std::nullopt;
    const unsigned long v = std::strtoul(text.c_str(), nullptr, 10);
    if (v >= static_cast<unsigned long>(static_cast<uid_t>(-1))) return std::nullopt;
    return static_cast<uid_t>(v);
}

// The rule for a directory that holds control sockets, on both sides: a
// directory of `owner` that only it may write to (so that nobody else can
// put a socket, or anything named like one, in it).
bool private_to(const struct stat& st, uid_t owner) {
    return S_ISDIR(st.st_mode) && st.st_uid == owner && !(st.st_mode & (S_IWGRP | S_IWOTH));
}

std::string errno_text(int err) { return std::generic_category().message(err); }

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
        if (why) *why = "cannot create " + dir + ": " + errno_text(err);
        return {err, std::generic_category()};
    }
    struct stat st{};
    if (::lstat(dir.c_str(), &st) != 0) {
        const int err = errno;
        if (why) *why = dir + ": " + errno_text(err);
        return {err, std::generic_category()};
    }
    if (!private_to(st, ::geteuid())) {
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
    std::vector<SocketDir> dirs;
    add(dirs, env("UHMM_RUNTIME_DIR"), ::geteuid());
    if (auto uid = process_uid(pid)) add_for_uid(dirs, *uid);
    std::vector<std::string> paths;
    for (auto& d : dirs) paths.push_back(std::move(d.path));
    return paths;
}

std::vector<SocketDir> all_dirs() {
    std::vector<SocketDir> dirs;
    add(dirs, env("UHMM_RUNTIME_DIR"), ::geteuid());
    add_for_uid(dirs, ::getuid());
    if (::geteuid() == 0) {
        // Root may list everyone's: the per-user directories that exist,
        // each to be owned by the uid its name gives.
        add(dirs, "/run/uhmm", 0);
        for (const std::string parent : {"/run/user", "/tmp"}) {
            DIR* d = ::opendir(parent.c_str());
            if (!d) continue;
            while (const dirent* e = ::readdir(d)) {
                const std::string name = e->d_name;
                if (parent == "/run/user") {
                    if (const auto uid = uid_named(name)) add(dirs, parent + "/" + name + "/uhmm", *uid);
                } else if (name.rfind("uhmm-", 0) == 0) {
                    if (const auto uid = uid_named(name.substr(5))) add(dirs, parent + "/" + name, *uid);
                }
            }
            ::closedir(d);
        }
    }
    return dirs;
}

uhmm::Fd open_socket_dir(const SocketDir& dir, std::string* why) {
    uhmm::Fd fd(::open(dir.path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        const int err = errno;
        if (why) *why = dir.path + (err == ELOOP ? " is a symbolic link (not followed)" : ": " + errno_text(err));
        return fd;
    }
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) {
        if (why) *why = dir.path + ": " + errno_text(errno);
        return {};
    }
    if (!private_to(st, dir.owner)) {
        if (why)
            *why = dir.path + " is not a directory of uid " + std::to_string(dir.owner) +
                   " that only it may write to (owner " + std::to_string(st.st_uid) + ")";
        return {};
    }
    return fd;
}

}  // namespace uhmm::control
