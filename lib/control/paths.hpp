// Where control sockets live (docs/CONTROL.md, "Where"), for both sides: the
// runtime that serves one and hmmctl that looks for a process's.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <uhmm/fd.hpp>

namespace uhmm::control {

// The directory this process serves its socket in: $UHMM_RUNTIME_DIR, else
// /run/uhmm for root, else $XDG_RUNTIME_DIR/uhmm, else /tmp/uhmm-<uid>.
std::string server_dir();
// Create `dir` (mode 0700) if missing; refuse one that is not a directory
// owned by this euid, or that others may write to (a /tmp path someone else
// made first): EPERM, with the reason in `why`.
std::error_code ensure_private_dir(const std::string& dir, std::string* why = nullptr);
std::string socket_path(const std::string& dir, pid_t pid);

// The directories a client tries for process `pid`, in order, without
// duplicates (see docs/CONTROL.md): $UHMM_RUNTIME_DIR, /run/uhmm (pid's uid
// is 0), $XDG_RUNTIME_DIR/uhmm (the client's uid is pid's), then
// /run/user/<uid>/uhmm and /tmp/uhmm-<uid> with pid's uid.
std::vector<std::string> client_dirs(pid_t pid);

// A directory a listing looks in, and the uid that must own it. A server
// only serves in a directory of its own euid (ensure_private_dir), so a
// directory owned by anyone else holds no socket of a runtime: it is
// someone's trap, such as a /tmp/uhmm-1000 made by another user first.
struct SocketDir {
    std::string path;
    uid_t owner;   // the caller's euid for $UHMM_RUNTIME_DIR and $XDG_RUNTIME_DIR/uhmm,
                   // 0 for /run/uhmm, the uid the name says for /run/user/UID/uhmm and /tmp/uhmm-UID
};
// Every directory a listing looks in: client_dirs' for every uid seen (root:
// every /run/user/UID/uhmm and /tmp/uhmm-UID there is).
std::vector<SocketDir> all_dirs();
// `dir.path` opened to read its entries, without following a symlink
// (O_NOFOLLOW|O_DIRECTORY), and checked as ensure_private_dir checks a
// server's: owned by `dir.owner` and writable by no one else. An invalid Fd
// when it is not, with the reason in `why`.
uhmm::Fd open_socket_dir(const SocketDir& dir, std::string* why = nullptr);

// The real uid of process `pid` (from /proc/PID/status); nullopt when there
// is no such process.
std::optional<uid_t> process_uid(pid_t pid);

}  // namespace uhmm::control
