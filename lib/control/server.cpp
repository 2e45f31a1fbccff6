// The control socket's server (see the header).
#include "control/server.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "base/internal_thread.hpp"
#include "base/log.hpp"
#include "control/line_reader.hpp"
#include "control/paths.hpp"
#include "control/requests.hpp"
#include "base/private_fds.hpp"

namespace uhmm::control {

namespace {

std::error_code last_error() { return {errno, std::generic_category()}; }

// The socket a process serves, removed at exit too: a program under the
// preload library never destroys its runtime. Only the process that bound it
// removes it (not a fork()ed child exiting).
struct ExitCleanup {
    std::mutex m;
    std::string path;
    pid_t pid = 0;

    static ExitCleanup& get() {
        static ExitCleanup* c = [] {
            auto* c = new ExitCleanup;   // immortal: atexit may run after static destructors
            std::atexit([] { get().remove(); });
            return c;
        }();
        return *c;
    }
    void set(const std::string& p) {
        std::lock_guard lock(m);
        path = p;
        pid = ::getpid();
    }
    void remove() {
        std::lock_guard lock(m);
        if (!path.empty() && pid == ::getpid()) ::unlink(path.c_str());
        path.clear();
    }
};

bool fill_address(sockaddr_un& a, const std::string& path) {
    a = {};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path) return false;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return true;
}

// Whether something answers at `path` (a live server), as opposed to a
// socket file left by a dead process.
bool answers(const sockaddr_un& a) {
    Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    return probe && ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
}

struct Client {
    Fd fd;
    LineReader reader;
    std::string out;
    bool closing = false;   // close once `out` is sent
};

// Sends what it can of c.out without blocking. False: the peer is gone.
bool flush(Client& c) {
    while (!c.out.empty()) {
        const ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c.out.erase(0, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return true;
}

// A refused peer: one line, best effort, and it is gone.
void refuse(int fd, std::string_view code, std::string_view message) {
    const std::string line = error_line(code, message) + "\n";
    (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

Result<std::unique_ptr<Server>> Server::start(Runtime& rt, std::string* why) {
    auto fail = [&](std::error_code ec, std::string text) -> Result<std::unique_ptr<Server>> {
        if (why) *why = std::move(text);
        return ec;
    };
    const std::string dir = server_dir();
    std::string dir_why;
    if (auto ec = ensure_private_dir(dir, &dir_why)) return fail(ec, dir_why);
    const std::string path = socket_path(dir, ::getpid());
    sockaddr_un addr{};
    if (!fill_address(addr, path)) return fail(std::make_error_code(std::errc::filename_too_long), path + ": too long for a socket");

    Fd listener(base::hide_fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)));
    if (!listener) return fail(last_error(), "socket: " + last_error().message());
    if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        if (errno != EADDRINUSE) return fail(last_error(), path + ": " + last_error().message());
        if (answers(addr)) return fail(std::make_error_code(std::errc::address_in_use), path + " is served already");
        // Left by a dead process whose pid this one now has.
        ::unlink(path.c_str());
        if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
            return fail(last_error(), path + ": " + last_error().message());
    }
    // The directory is 0700 already; the socket itself follows the same rule.
    (void)::chmod(path.c_str(), 0600);
    if (::listen(listener.get(), 16) != 0) {
        const auto ec = last_error();
        ::unlink(path.c_str());
        return fail(ec, "listen: " + ec.message());
    }
    Fd epoll(base::hide_fd(::epoll_create1(EPOLL_CLOEXEC)));
    Fd stop_event(base::hide_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)));
    if (!epoll || !stop_event) {
        const auto ec = last_error();
        ::unlink(path.c_str());
        return fail(ec, "epoll: " + ec.message());
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listener.get();
    (void)::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, listener.get(), &ev);
    ev.data.fd = stop_event.get();
    (void)::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, stop_event.get(), &ev);
    ExitCleanup::get().set(path);
    std::unique_ptr<Server> s(new Server(rt, std::move(listener), std::move(epoll), std::move(stop_event), path));
    s->thread_ = base::start_internal_thread("uhmm-control", [srv = s.get()] { srv->run(); });
    return s;
}

Server::Server(Runtime& rt, Fd listener, Fd epoll, Fd stop_event, std::string path)
    : rt_(rt), listener_(std::move(listener)), epoll_(std::move(epoll)), stop_event_(std::move(stop_event)),
      path_(std::move(path)) {}

Server::~Server() {
    stopping_.store(true, std::memory_order_relaxed);
    const std::uint64_t one = 1;
    (void)!::write(stop_event_.get(), &one, sizeof one);
    if (thread_.joinable()) thread_.join();
    ExitCleanup::get().remove();
}

void Server::run() noexcept {
    try {
        std::map<int, Client> clients;
        auto drop = [&](int fd) {
            (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
            clients.erase(fd);
        };
        // Interest in writability only while replies wait.
        auto update = [&](Client& c) {
            epoll_event ev{};
            ev.events = EPOLLIN | EPOLLRDHUP | (c.out.empty() ? 0u : EPOLLOUT);
            ev.data.fd = c.fd.get();
            (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
        };
        const uid_t self = ::geteuid();
        epoll_event events[32];
        std::string buf(64 * 1024, '\0');
        while (!stopping_.load(std::memory_order_relaxed)) {
            const int n = ::epoll_wait(epoll_.get(), events, 32, -1);
            if (n < 0) {
                if (errno == EINTR) continue;
                log::get().error("control socket: epoll_wait: {}; no more requests", std::strerror(errno));
                return;
            }
            for (int i = 0; i < n; ++i) {
                const int fd = events[i].data.fd;
                if (fd == stop_event_.get()) return;
                if (fd == listener_.get()) {
                    for (;;) {
                        Fd conn(base::hide_fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)));
                        if (!conn) break;
                        ucred peer{};
                        socklen_t len = sizeof peer;
                        if (::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
                            (peer.uid != self && peer.uid != 0)) {
                            refuse(conn.get(), "EPERM",
                                   "uid " + std::to_string(peer.uid) + " may not control process " +
                                       std::to_string(::getpid()) + " (same uid or root only)");
                            continue;
                        }
                        if (clients.size() >= kMaxClients) {
                            refuse(conn.get(), "EBUSY", "too many connections (16)");
                            continue;
                        }
                        epoll_event ev{};
                        ev.events = EPOLLIN | EPOLLRDHUP;
                        ev.data.fd = conn.get();
                        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, conn.get(), &ev) != 0) continue;
                        const int key = conn.get();
                        clients[key].fd = std::move(conn);
                    }
                    continue;
                }
                auto it = clients.find(fd);
                if (it == clients.end()) continue;
                Client& c = it->second;
                bool alive = true;
                const Emit emit = [&](std::string&& line) {
                    c.out += line;
                    c.out += '\n';
                    alive = alive && flush(c);   // progress lines go out while a migration runs
                };
                auto on_line = [&](LineReader::Kind kind, std::string_view line) {
                    if (kind == LineReader::Kind::too_long)
                        emit(error_line("TOO_LONG", "request line over 65536 bytes"));
                    else if (!line.empty())
                        handle_request(rt_, line, emit, stopping_);
                };
                if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                    for (;;) {
                        const ssize_t got = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
                        if (got > 0) {
                            c.reader.feed(std::string_view(buf.data(), static_cast<std::size_t>(got)), on_line);
                            if (!alive || c.out.size() > kMaxPending) break;
                            continue;
                        }
                        if (got < 0 && errno == EINTR) continue;
                        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                        // End of the peer's requests (or an error): answer what came, then close.
                        c.reader.finish(on_line);
                        c.closing = true;
                        break;
                    }
                }
                alive = alive && flush(c);
                if (!alive || c.out.size() > kMaxPending || (c.closing && c.out.empty())) {
                    drop(fd);
                    continue;
                }
                update(c);
            }
        }
    } catch (const std::exception& e) {
        log::get().error("control socket: {}; no more requests", e.what());
    } catch (...) {
        log::get().error("control socket: unknown error; no more requests");
    }
}

}  // namespace uhmm::control
