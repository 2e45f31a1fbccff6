// The control socket of a live runtime (docs/CONTROL.md): every request,
// their errors, hostile input, who may connect, and the socket's life.
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "control/paths.hpp"
#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;
using nlohmann::json;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

// A private UHMM_RUNTIME_DIR for this process (set before any runtime).
const std::string& runtime_dir() {
    static const std::string dir = [] {
        char tmpl[] = "/tmp/uhmm-control-test-XXXXXX";
        const char* d = ::mkdtemp(tmpl);
        REQUIRE(d);
        ::setenv("UHMM_RUNTIME_DIR", (std::string(d) + "/run").c_str(), 1);
        return std::string(d) + "/run";
    }();
    return dir;
}

std::string my_socket() { return control::socket_path(runtime_dir(), ::getpid()); }

class Conn {
public:
    explicit Conn(const std::string& path = my_socket()) {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        error_ = connected_ ? 0 : errno;
    }
    ~Conn() { ::close(fd_); }
    bool connected() const { return connected_; }
    int error() const { return error_; }

    void send_raw(const std::string& bytes) {
        std::size_t off = 0;
        while (off < bytes.size()) {
            const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
            REQUIRE(n > 0);
            off += static_cast<std::size_t>(n);
        }
    }
    // The next line, or nullopt at end of stream or after 10 s.
    std::optional<std::string> line() {
        for (;;) {
            if (auto nl = buf_.find('\n'); nl != std::string::npos) {
                std::string l = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return l;
            }
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 10000) <= 0) return std::nullopt;
            char tmp[65536];
            const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
            if (n <= 0) return std::nullopt;
            buf_.append(tmp, static_cast<std::size_t>(n));
        }
    }
    json reply() {
        auto l = line();
        REQUIRE(l);
        return json::parse(*l);
    }
    json ask(const json& request) {
        send_raw(request.dump() + "\n");
        return reply();
    }

private:
    int fd_ = -1;
    bool connected_ = false;
    int error_ = 0;
    std::string buf_;
};

std::unique_ptr<Runtime> control_runtime(const std::string& extra = "") {
    (void)runtime_dir();
    return make_runtime(std::string(kMemfdConf) + ",socket=on" + extra);
}

void check_error(const json& r, const char* code) {
    INFO(r.dump());
    CHECK(r["ok"] == false);
    CHECK(r["error"] == code);
    CHECK(r["message"].is_string());
    CHECK(!r["message"].get<std::string>().empty());
}

}  // namespace

TEST_CASE("hello, ranges, migrate and stat describe and move a live range") {
    auto rt = control_runtime();
    constexpr std::size_t pages = 256, len = pages * kPage;
    auto* p = allocate_filled(*rt, len);
    struct stat st{};
    REQUIRE(::stat(my_socket().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    Conn c;
    REQUIRE(c.connected());

    json h = c.ask({{"cmd", "hello"}, {"id", 7}});
    CHECK(h["ok"] == true);
    CHECK(h["id"] == 7);
    CHECK(h["protocol"] == 1);
    CHECK(h["pid"] == ::getpid());
    CHECK(h["managed_bytes"] == len);
    CHECK(h["host_bytes"] == len);
    CHECK(h["policy"] == "none");

    json r = c.ask({{"cmd", "ranges"}});
    REQUIRE(r["ranges"].size() == 1);
    CHECK(r["ranges"][0]["start"] == addr_of(p));
    CHECK(r["ranges"][0]["end"] == addr_of(p) + len);
    CHECK(r["ranges"][0]["host_pages"] == pages);

    // Half to the device, with progress lines first.
    c.send_raw(json{{"cmd", "migrate"}, {"addr", addr_of(p)}, {"len", len / 2}, {"to", "device"},
                    {"progress", true}, {"id", "m1"}}
                   .dump() +
               "\n");
    json m = c.reply();
    CHECK(m["progress"]["total_pages"] == pages / 2);
    CHECK(m["id"] == "m1");
    while (m.contains("progress")) m = c.reply();
    CHECK(m["ok"] == true);
    CHECK(m["requested_pages"] == pages / 2);
    CHECK(m["migrated_pages"] == pages / 2);
    CHECK(m["failed_pages"] == 0);
    CHECK(count_state(*rt, p, len / 2, PageState::device) == pages / 2);
    r = c.ask({{"cmd", "ranges"}});
    CHECK(r["ranges"][0]["device_pages"] == pages / 2);
    // Again: already there.
    m = c.ask({{"cmd", "migrate"}, {"addr", addr_of(p)}, {"len", len / 2}, {"to", "device"}});
    CHECK(m["already_pages"] == pages / 2);

    // The program reads it all back (faults), and stat counts them.
    CHECK(first_mismatch(p, len) == len);
    json s = c.ask({{"cmd", "stat"}});
    CHECK(s["ok"] == true);
    CHECK(s["faults"].get<std::uint64_t>() >= 1);
    CHECK(s["device_faults"].get<std::uint64_t>() >= 1);
    CHECK(s["pages_to_device"] == pages / 2);
    CHECK(s["pages_to_host"].get<std::uint64_t>() == pages / 2);
    CHECK(s["faults_missing"].get<std::uint64_t>() + s["faults_wp"].get<std::uint64_t>() == s["faults"]);
    CHECK(s["fault_p50_ns"].get<std::uint64_t>() > 0);
    CHECK(s["fault_p99_ns"] >= s["fault_p50_ns"]);
    CHECK(s["copy_batches"].get<std::uint64_t>() > 0);

    // And home by request.
    migrate_ok(*rt, p, len, Target::device);
    m = c.ask({{"cmd", "migrate"}, {"addr", addr_of(p)}, {"len", len}, {"to", "host"}});
    CHECK(m["migrated_pages"] == pages);
    CHECK(count_state(*rt, p, len, PageState::host) == pages);
    CHECK(first_mismatch(p, len) == len);
    REQUIRE(!rt->release(p, len));
}

TEST_CASE("policy changes the running policy and its knobs") {
    auto rt = control_runtime();
    Conn c;
    json r = c.ask({{"cmd", "policy"}, {"spec", "tier,tier_hot=1M"}});
    INFO(r.dump());
    CHECK(r["ok"] == true);
    CHECK(r["policy"] == "tier");
    CHECK(r["previous"] == "none");
    CHECK(rt->policy().kind == PolicyKind::tier);
    CHECK(rt->policy().tier_hot == (1u << 20));
    CHECK(c.ask({{"cmd", "hello"}})["policy"] == "tier");
    // The tier policy really runs: 8 MiB touched, about 1 MiB left on the host.
    constexpr std::size_t len = 8u << 20;
    auto* p = allocate_filled(*rt, len);
    CHECK(eventually([&] { return count_state(*rt, p, len, PageState::host) <= (1u << 20) / kPage; }));
    // Knobs alone keep the policy; a bad spec changes nothing.
    r = c.ask({{"cmd", "policy"}, {"spec", "tier_hot=2M"}});
    CHECK(r["policy"] == "tier");
    CHECK(rt->policy().tier_hot == (2u << 20));
    check_error(c.ask({{"cmd", "policy"}, {"spec", "fast"}}), "EINVAL");
    check_error(c.ask({{"cmd", "policy"}, {"spec", "tier,arena=memfd"}}), "EINVAL");
    check_error(c.ask({{"cmd", "policy"}, {"spec", "chaos,chaos_fraction=7"}}), "EINVAL");
    check_error(c.ask({{"cmd", "policy"}, {"spec", ""}}), "EINVAL");
    CHECK(rt->policy().kind == PolicyKind::tier);
    r = c.ask({{"cmd", "policy"}, {"spec", "none"}});
    CHECK(r["previous"] == "tier");
    CHECK(rt->stats().policy_rounds > 0);   // the retired policy's rounds still count
    CHECK(first_mismatch(p, len) == len);
    REQUIRE(!rt->release(p, len));
}

TEST_CASE("bad requests get error replies and the connection stays usable") {
    auto rt = control_runtime();
    constexpr std::size_t len = 64 * kPage;
    auto* p = allocate_filled(*rt, len);
    const auto base = addr_of(p);
    Conn c;
    auto migrate = [&](json addr, json length, json to = "device") {
        return c.ask({{"cmd", "migrate"}, {"addr", addr}, {"len", length}, {"to", to}, {"id", 1}});
    };
    check_error(migrate(base + 1, kPage), "EINVAL");           // unaligned address
    check_error(migrate(base, 0), "EINVAL");                   // zero length
    check_error(migrate(base, 100), "EINVAL");                 // unaligned length
    check_error(migrate(base, std::uint64_t{1} << 62), "EINVAL");   // beyond any address
    check_error(migrate(base, ~std::uint64_t{0} - 4095), "EINVAL");  // wraps around
    check_error(migrate(base, len + kPage), "EFAULT");          // runs past the range
    check_error(migrate(4096, kPage), "EFAULT");                // not managed at all
    check_error(migrate(-4096, kPage), "EINVAL");               // negative
    check_error(migrate("0x1000", kPage), "BAD_REQUEST");       // wrong type
    check_error(migrate(base, kPage, "gpu"), "EINVAL");
    check_error(c.ask({{"cmd", "migrate"}, {"addr", base}}), "BAD_REQUEST");   // missing fields
    check_error(c.ask({{"cmd", "explode"}}), "UNKNOWN_CMD");
    check_error(c.ask({{"cmd", 42}}), "BAD_REQUEST");
    check_error(c.ask({{"nocmd", true}}), "BAD_REQUEST");
    check_error(c.ask(json::array({1, 2})), "BAD_REQUEST");
    c.send_raw("{\"cmd\": \"hel\n");
    check_error(c.reply(), "PARSE");   // truncated JSON
    c.send_raw(std::string(200000, '[') + "\n");
    check_error(c.reply(), "TOO_LONG");
    c.send_raw(std::string(60000, '[') + "\n");   // deep, but within the limit
    check_error(c.reply(), "PARSE");
    // The id comes back even on errors.
    json e = migrate(base + 1, kPage);
    CHECK(e["id"] == 1);
    // Nothing moved by any of it; the connection still answers.
    CHECK(count_state(*rt, p, len, PageState::host) == 64);
    CHECK(c.ask({{"cmd", "hello"}})["ok"] == true);
    CHECK(first_mismatch(p, len) == len);
    REQUIRE(!rt->release(p, len));
}

TEST_CASE("random bytes never stop the server nor change the memory") {
    auto rt = control_runtime();
    constexpr std::size_t len = 64 * kPage;
    auto* p = allocate_filled(*rt, len);
    std::mt19937_64 rng(5);
    for (int round = 0; round < 20; ++round) {
        Conn c;
        std::string junk(1 + rng() % 4096, '\0');
        for (auto& ch : junk) ch = static_cast<char>(rng());
        c.send_raw(junk + "\n");
        // Every reply is a JSON error line; then a real request still works.
        c.send_raw("{\"cmd\":\"hello\",\"id\":\"after\"}\n");
        for (;;) {
            auto l = c.line();
            REQUIRE(l);
            const json r = json::parse(*l);
            if (r.value("id", json()) == "after") {
                CHECK(r["ok"] == true);
                break;
            }
            CHECK(r["ok"] == false);
        }
    }
    // Half a request, then the client vanishes; a client that never reads.
    {
        Conn c;
        c.send_raw("{\"cmd\":\"ran");
    }
    {
        Conn c;
        std::string many;
        for (int i = 0; i < 2000; ++i) many += "{\"cmd\":\"ranges\"}\n";
        c.send_raw(many);
    }
    Conn c;
    CHECK(c.ask({{"cmd", "hello"}})["ok"] == true);
    CHECK(first_mismatch(p, len) == len);
    REQUIRE(!rt->release(p, len));
}

TEST_CASE("more than 16 connections: the surplus gets EBUSY") {
    auto rt = control_runtime();
    std::vector<std::unique_ptr<Conn>> held;
    for (int i = 0; i < 16; ++i) {
        held.push_back(std::make_unique<Conn>());
        REQUIRE(held.back()->ask({{"cmd", "hello"}})["ok"] == true);
    }
    Conn extra;
    auto l = extra.line();
    REQUIRE(l);
    check_error(json::parse(*l), "EBUSY");
    held.pop_back();
    // A slot freed: a new client is served again (once the server saw the close).
    CHECK(eventually([&] {
        Conn again;
        again.send_raw("{\"cmd\":\"hello\"}\n");
        auto reply = again.line();
        return reply && json::parse(*reply)["ok"] == true;
    }));
}

TEST_CASE("another uid is refused; the socket goes with the runtime") {
    auto rt = control_runtime();
    const std::string path = my_socket();
    if (::geteuid() != 0) {
        WARN("not root: the other-uid case needs setuid(); not run");
    } else {
        // Let nobody reach the socket, so that the server's own check decides.
        const std::string parent = runtime_dir().substr(0, runtime_dir().rfind('/'));
        REQUIRE(::chmod(parent.c_str(), 0755) == 0);
        REQUIRE(::chmod(runtime_dir().c_str(), 0755) == 0);
        REQUIRE(::chmod(path.c_str(), 0666) == 0);
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            ::close(fds[0]);
            if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(3);
            Conn c(path);
            std::string got = c.connected() ? c.line().value_or("<closed>") : "<no connect>";
            auto rest = c.connected() ? c.line() : std::nullopt;
            got += rest ? "|more" : "|closed";
            (void)!::write(fds[1], got.data(), got.size());
            ::_exit(0);
        }
        ::close(fds[1]);
        std::string got;
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fds[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<std::size_t>(n));
        ::close(fds[0]);
        CHECK(child_exit_code(wait_child(child)) == 0);
        INFO(got);
        const auto bar = got.rfind('|');
        REQUIRE(bar != std::string::npos);
        check_error(json::parse(got.substr(0, bar)), "EPERM");
        CHECK(got.substr(bar) == "|closed");
        REQUIRE(::chmod(runtime_dir().c_str(), 0700) == 0);
        REQUIRE(::chmod(parent.c_str(), 0700) == 0);
    }
    // A second runtime of the process serves nothing and breaks nothing.
    auto second = control_runtime();
    CHECK(Conn().ask({{"cmd", "hello"}})["ok"] == true);
    second.reset();
    CHECK(Conn().ask({{"cmd", "hello"}})["ok"] == true);
    rt.reset();
    struct stat st{};
    CHECK(::stat(path.c_str(), &st) != 0);
    CHECK(!Conn(path).connected());
}

TEST_CASE("a stale socket of a dead process is replaced") {
    (void)runtime_dir();
    REQUIRE(control::ensure_private_dir(runtime_dir()) == std::error_code{});
    // A socket file nobody serves, at this pid's path.
    {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", my_socket().c_str());
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        ::close(fd);
    }
    auto rt = control_runtime();
    CHECK(Conn().ask({{"cmd", "hello"}})["pid"] == ::getpid());
}
