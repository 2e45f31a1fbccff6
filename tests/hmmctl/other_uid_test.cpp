// Another user's hmmctl (uid 65534, through setpriv) is refused: with the
// default modes at connect (the socket's 0700 directory: EACCES), and, with
// the directory and socket opened up, by the server's SO_PEERCRED check
// (an EPERM reply, then the connection closed). The process is untouched.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include "fixture.hpp"

using namespace uhmm::hmmctl_test;

TEST_CASE("a client of another uid is refused at connect and by the server", "[other-uid]") {
    Fixture f;
    auto t = f.managed_target(16);
    const std::string pid = std::to_string(t->pid());
    const std::string sock = f.socket_of(t->pid());

    struct stat st{};
    REQUIRE(::stat(f.run_dir().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    REQUIRE(::stat(sock.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);

    // Default modes: the directory stops nobody before the server sees it.
    const Ran denied = f.ctl_as_nobody({"stat", pid});
    INFO(denied.describe());
    CHECK(denied.status == 1);
    CHECK(one_message(denied.err, "permission denied"));
    const Ran denied_migrate = f.ctl_as_nobody({"migrate", pid, hex(t->addr()), "4K", "--to", "device"});
    INFO(denied_migrate.describe());
    CHECK(denied_migrate.status == 1);
    CHECK(one_message(denied_migrate.err, "permission denied"));

    // Opened up: connect succeeds and the server refuses the peer's uid.
    REQUIRE(::chmod(f.dir().path().c_str(), 0711) == 0);
    REQUIRE(::chmod(f.run_dir().c_str(), 0755) == 0);
    REQUIRE(::chmod(sock.c_str(), 0666) == 0);
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"stat", pid}, {"migrate", pid, hex(t->addr()), "4K", "--to", "device"}, {"policy", pid, "chaos"}}) {
        const Ran refused = f.ctl_as_nobody(args);
        INFO(refused.describe());
        CHECK(refused.status == 1);
        CHECK(one_message(refused.err, "permission denied"));
        CHECK(contains(refused.err, "refused"));
    }
    REQUIRE(::chmod(sock.c_str(), 0600) == 0);
    REQUIRE(::chmod(f.run_dir().c_str(), 0700) == 0);
    REQUIRE(::chmod(f.dir().path().c_str(), 0700) == 0);

    // Nothing happened to the process: same policy, nothing moved, data intact.
    const Ran s = f.ctl({"stat", pid, "--json"});
    INFO(s.describe());
    REQUIRE(s.status == 0);
    CHECK(s.json().value("policy", "") == "none");
    CHECK(u64(s.json(), "pages_to_device") == 0);
    CHECK(t->ask("verify") == "OK");
    CHECK(t->finish("exit 0") == 0);
}

TEST_CASE("maps of another user's process is refused without ptrace access", "[other-uid]") {
    Fixture f;
    auto t = f.plain_target();
    const Ran r = f.ctl_as_nobody({"maps", std::to_string(t->pid())});
    INFO(r.describe());
    CHECK(r.status == 1);
    CHECK(one_message(r.err, "permission denied"));
}
