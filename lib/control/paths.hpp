// Where control sockets live (docs/CONTROL.md, "Where"), for both sides: the
// runtime that serves one and hmmctl that looks for a process's.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <system_error>
#include <vector>

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
// Every directory a listing looks in: client_dirs' for every uid seen.
std::vector<std::string> all_dirs();
// The real uid of process `pid` (from /proc/PID/status); nullopt when there
// is no such process.
std::optional<uid_t> process_uid(pid_t pid);

}  // namespace uhmm::control
