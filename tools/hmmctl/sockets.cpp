// The sockets hmmctl list finds (see the header).
//
// Every look at an entry goes through the directory's descriptor (fstatat,
// connect through /proc/self/fd, unlinkat): a path could be swapped for a
// symlink between two looks, the opened directory cannot.
#include "sockets.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "client.hpp"
#include "numbers.hpp"

namespace hmmctl {

namespace {

// The pid a "<pid>.sock" name gives.
std::optional<pid_t> pid_of(const std::string& name) {
    if (name.size() <= 5 || name.compare(name.size() - 5, 5, ".sock") != 0) return std::nullopt;
    return parse_pid(name.substr(0, name.size() - 5), nullptr);
}

bool is_socket(int dir_fd, const std::string& name, struct stat& st) {
    return ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

std::map<pid_t, FoundSocket> find_sockets(const std::vector<uhmm::control::SocketDir>& dirs) {
    std::map<pid_t, FoundSocket> found;
    for (const auto& dir : dirs) {
        uhmm::Fd fd = uhmm::control::open_socket_dir(dir);
        if (!fd) continue;
        // fdopendir owns the descriptor it gets: a duplicate, so that `fd`
        // stays ours for fstatat.
        const int copy = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0);
        DIR* d = copy < 0 ? nullptr : ::fdopendir(copy);
        if (!d) {
            if (copy >= 0) ::close(copy);
            continue;
        }
        while (const dirent* e = ::readdir(d)) {
            const std::string name = e->d_name;
            const auto pid = pid_of(name);
            struct stat st{};
            if (pid && is_socket(fd.get(), name, st)) found.emplace(*pid, FoundSocket{*pid, dir, name});
        }
        ::closedir(d);
    }
    return found;
}

bool remove_stale(const FoundSocket& s) {
    const uid_t me = ::geteuid();
    if (s.dir.owner != me) return false;   // root does not clean up after other users
    const uhmm::Fd dir = uhmm::control::open_socket_dir(s.dir);
    struct stat st{};
    if (!dir || !is_socket(dir.get(), s.name, st) || st.st_uid != me) return false;
    // Its pid's process is gone, but a socket someone still listens on is
    // not stale (a process of another pid namespace, say): only one that
    // refuses the connection is.
    uhmm::Fd probe;
    if (connect_unix("/proc/self/fd/" + std::to_string(dir.get()) + "/" + s.name, probe) != ECONNREFUSED)
        return false;
    return ::unlinkat(dir.get(), s.name.c_str(), 0) == 0;
}

}  // namespace hmmctl
