// The control socket's client (see the header and docs/CONTROL.md).
//
// Finding the socket: the directories the protocol names, tried in order.
// A missing socket is "no runtime"; a directory or socket we may not enter is
// "permission denied" (the server's 0700 directory stops other users at
// connect); a socket nobody listens on is a stale one (a process killed by a
// signal leaves it). Each is a different message, because each has a
// different fix.
#include "client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "control/paths.hpp"
#include "errors.hpp"

namespace hmmctl {

namespace {

constexpr std::size_t kMaxReplyLine = std::size_t{64} << 20;   // a ranges reply of a huge process fits

std::string errno_text(int err) { return std::strerror(err); }

std::string joined(const std::vector<std::string>& dirs) {
    std::string out;
    for (const auto& d : dirs) out += (out.empty() ? "" : ", ") + d;
    return out.empty() ? "no directory to look in" : out;
}

std::string seconds_text(std::chrono::milliseconds t) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g s", static_cast<double>(t.count()) / 1000.0);
    return buf;
}

int millis_left(std::chrono::steady_clock::time_point deadline) {
    using std::chrono::duration_cast, std::chrono::milliseconds;
    const auto left = duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    return left.count() < 0 ? 0 : static_cast<int>(std::min<long long>(left.count(), 1 << 30));
}

}  // namespace

int connect_unix(const std::string& path, uhmm::Fd& out) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return ENAMETOOLONG;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    uhmm::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return errno;
    int r;
    do r = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    while (r != 0 && errno == EINTR);
    if (r != 0) return errno;
    out = std::move(fd);
    return 0;
}

Client Client::connect(pid_t pid, std::chrono::milliseconds timeout) {
    const std::string p = std::to_string(pid);
    const auto uid = uhmm::control::process_uid(pid);
    if (!uid) fail("no process " + p);
    const auto dirs = uhmm::control::client_dirs(pid);
    std::string denied, stale;
    for (const auto& dir : dirs) {
        const std::string path = uhmm::control::socket_path(dir, pid);
        uhmm::Fd fd;
        const int err = connect_unix(path, fd);
        if (err == 0) {
            Client c(std::move(fd), pid, path, timeout);
            c.say_hello();
            return c;
        }
        if (err == ENOENT || err == ENOTDIR) continue;
        if (err == EACCES || err == EPERM) {
            if (denied.empty()) denied = path;
            continue;
        }
        if (err == ECONNREFUSED) {
            if (stale.empty()) stale = path;
            continue;
        }
        fail("cannot connect to " + path + ": " + errno_text(err));
    }
    if (!denied.empty())
        fail("permission denied: cannot reach " + denied + " (process " + p + " belongs to uid " +
             std::to_string(*uid) + "; run hmmctl as that user or as root)");
    if (!stale.empty())
        fail("process " + p + " has no uhmm runtime (" + stale + " is a stale socket: nobody listens on it)");
    fail("process " + p + " has no uhmm runtime (no socket in " + joined(dirs) + ")");
}

Client Client::connect_path(const std::string& path, pid_t pid, std::chrono::milliseconds timeout) {
    uhmm::Fd fd;
    const int err = connect_unix(path, fd);
    if (err == EACCES || err == EPERM) fail("permission denied: cannot reach " + path);
    if (err == ECONNREFUSED) fail(path + " is a stale socket: nobody listens on it");
    if (err != 0) fail("cannot connect to " + path + ": " + errno_text(err));
    Client c(std::move(fd), pid, path, timeout);
    c.say_hello();
    return c;
}

void Client::say_hello() {
    hello_ = call({{"cmd", "hello"}});
    const auto protocol = hello_.find("protocol");
    if (protocol == hello_.end() || !protocol->is_number_integer() || protocol->get<std::int64_t>() != 1)
        fail(who() + " speaks control protocol " + (protocol == hello_.end() ? "?" : protocol->dump()) +
             ", this hmmctl speaks 1");
}

std::string Client::who() const { return "process " + std::to_string(pid_); }

nlohmann::json Client::call(nlohmann::json request, const Progress& progress) {
    const std::int64_t id = next_id_++;
    request["id"] = id;
    const std::string cmd = request.value("cmd", std::string("?"));
    // A server that refuses us (EPERM, EBUSY) may have answered and closed
    // before our request went out: the write fails, the reply is there.
    const bool sent = send_line(request.dump() + "\n");
    for (;;) {
        std::string line;
        try {
            line = read_line();
        } catch (const Failure&) {
            if (!sent) fail("the connection to " + who() + " closed before the '" + cmd + "' request went out");
            throw;
        }
        nlohmann::json reply = nlohmann::json::parse(line, nullptr, false);
        if (reply.is_discarded() || !reply.is_object())
            fail(who() + " answered '" + cmd + "' with a line that is not a JSON object");
        const auto ok = reply.find("ok");
        if (ok == reply.end()) {
            if (const auto p = reply.find("progress"); p != reply.end()) {
                if (progress) progress(*p);
                continue;
            }
            fail(who() + " answered '" + cmd + "' without \"ok\"");
        }
        if (!ok->is_boolean()) fail(who() + " answered '" + cmd + "' with a non-boolean \"ok\"");
        if (!ok->get<bool>()) error_reply(reply);
        if (reply.value("id", nlohmann::json()) != nlohmann::json(id))
            fail(who() + " answered '" + cmd + "' with the id of another request");
        return reply;
    }
}

void Client::error_reply(const nlohmann::json& reply) const {
    const std::string error = reply.value("error", std::string("error"));
    const std::string message = reply.value("message", std::string("(no message)"));
    if (error == "EPERM") fail("permission denied: " + who() + " refused us: " + message);
    if (error == "EBUSY") fail(who() + " is busy: " + message);
    fail(who() + ": " + message + " (" + error + ")");
}

bool Client::send_line(const std::string& line) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    std::size_t done = 0;
    while (done < line.size()) {
        const ssize_t n = ::send(fd_.get(), line.data() + done, line.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            done += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pollfd p{fd_.get(), POLLOUT, 0};
            if (::poll(&p, 1, millis_left(deadline)) == 0)
                fail(who() + " does not read its control socket (waited " + seconds_text(timeout_) + ")");
            continue;
        }
        return false;   // EPIPE, ECONNRESET: the server closed
    }
    return true;
}

std::string Client::read_line() {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    for (;;) {
        if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
            std::string line = buffer_.substr(0, nl);
            buffer_.erase(0, nl + 1);
            return line;
        }
        if (buffer_.size() > kMaxReplyLine) fail(who() + " sent a reply line over 64 MiB");
        pollfd p{fd_.get(), POLLIN, 0};
        const int r = ::poll(&p, 1, millis_left(deadline));
        if (r < 0 && errno == EINTR) continue;
        if (r == 0)
            fail(who() + " did not answer within " + seconds_text(timeout_) + " (--timeout to wait longer)");
        char buf[65536];
        const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != ECONNRESET) fail("reading from " + who() + ": " + errno_text(errno));
        if (n <= 0) fail(who() + " closed the control connection without a reply (did it exit?)");
        buffer_.append(buf, static_cast<std::size_t>(n));
    }
}

}  // namespace hmmctl
