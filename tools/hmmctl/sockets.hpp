// The control sockets hmmctl list finds, and the removal of stale ones.
//
// list runs as root, too, over directories anyone may name
// ($UHMM_RUNTIME_DIR) or make first (/tmp/uhmm-UID), so what it reads and
// what it removes are both checked: a directory is read only when it is a
// real directory (not a symlink) of the uid it belongs to, writable by no one
// else (control::open_socket_dir); an entry counts only when it is a socket;
// and a socket is removed only when it is ours, in a directory of ours,
// and nobody answers on it.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "control/paths.hpp"

namespace hmmctl {

struct FoundSocket {
    pid_t pid = 0;
    uhmm::control::SocketDir dir;
    std::string name;   // "<pid>.sock"
    std::string path() const { return dir.path + "/" + name; }
};

// Every socket named "<pid>.sock" in the directories of `dirs` that pass
// control::open_socket_dir (the first one found for a pid wins).
std::map<pid_t, FoundSocket> find_sockets(const std::vector<uhmm::control::SocketDir>& dirs);

// Removes `s`, whose process is gone, when it is stale: a socket owned by
// this euid, in a directory of this euid (checked again, through the
// directory's descriptor), that nobody answers on. Whether it removed it.
bool remove_stale(const FoundSocket& s);

}  // namespace hmmctl
