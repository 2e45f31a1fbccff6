// The client side of the control socket (docs/CONTROL.md): find process
// PID's socket, connect, say hello, then one request at a time, each a JSON
// line answered by one final reply line (migrate may send progress lines
// first).
//
// Every way this can go wrong ends in a Failure (errors.hpp) whose message
// says it for people: "no process 123", "process 123 has no uhmm runtime (no
// socket in ...)", "permission denied: ...", a reply that does not come within
// the timeout, an error reply ("... (EFAULT)").
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <uhmm/fd.hpp>

namespace hmmctl {

// Connects a stream socket to the Unix socket at `path`: 0 with the socket in
// `out`, or the errno of socket/connect (ECONNREFUSED: nobody listens there).
int connect_unix(const std::string& path, uhmm::Fd& out);

class Client {
public:
    using Progress = std::function<void(const nlohmann::json& progress)>;

    // Process `pid`'s socket, from the directories control::client_dirs()
    // names, in order. `timeout` bounds each wait for a reply line.
    static Client connect(pid_t pid, std::chrono::milliseconds timeout);
    // One socket by its path (hmmctl list); `pid` is the one its name says.
    static Client connect_path(const std::string& path, pid_t pid, std::chrono::milliseconds timeout);

    // Send `request` (an "id" is added) and return the final reply, which
    // has "ok": true. Progress lines go to `progress`. An error reply, a
    // closed connection or a timeout: Failure.
    nlohmann::json call(nlohmann::json request, const Progress& progress = {});

    // What "hello" answered on connecting (pid, command, policy, byte counts...).
    const nlohmann::json& hello() const { return hello_; }
    pid_t pid() const { return pid_; }
    const std::string& path() const { return path_; }

private:
    Client(uhmm::Fd fd, pid_t pid, std::string path, std::chrono::milliseconds timeout)
        : fd_(std::move(fd)), pid_(pid), path_(std::move(path)), timeout_(timeout) {}
    void say_hello();
    bool send_line(const std::string& line);
    std::string read_line();
    [[noreturn]] void error_reply(const nlohmann::json& reply) const;
    std::string who() const;

    uhmm::Fd fd_;
    pid_t pid_;
    std::string path_;
    std::chrono::milliseconds timeout_;
    std::string buffer_;
    std::int64_t next_id_ = 1;
    nlohmann::json hello_;
};

}  // namespace hmmctl
