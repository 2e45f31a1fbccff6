// The control socket's server (docs/CONTROL.md): one thread of the runtime's
// own (marked internal: it never allocates managed memory), an epoll loop
// over the listening socket, at most kMaxClients connections and a stop
// eventfd. Requests are handled on that thread, one line at a time.
//
// What a client cannot do: stall the fault path (the fault threads never
// wait for this one), hold the server's memory (lines are capped by
// LineReader, waiting replies at kMaxPending, then the client is dropped),
// or kill the host (send() with MSG_NOSIGNAL: no SIGPIPE).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <uhmm/fd.hpp>
#include <uhmm/result.hpp>
#include <uhmm/runtime.hpp>

namespace uhmm::control {

class Server {
public:
    static constexpr std::size_t kMaxClients = 16;
    static constexpr std::size_t kMaxPending = 4u << 20;   // reply bytes waiting for a slow reader

    // Binds <server_dir()>/<pid>.sock and starts the thread. EADDRINUSE when
    // another runtime of this process serves it already; other errors when
    // the directory or the socket cannot be made (`why` says which).
    static Result<std::unique_ptr<Server>> start(Runtime& rt, std::string* why = nullptr);
    ~Server();   // stops the thread (a migration in progress ends after its piece) and removes the socket

    const std::string& path() const noexcept { return path_; }

    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

private:
    Server(Runtime& rt, Fd listener, Fd epoll, Fd stop_event, std::string path);
    void run() noexcept;

    Runtime& rt_;
    Fd listener_, epoll_, stop_event_;
    std::string path_;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

}  // namespace uhmm::control
