// hmmctl list removes only what is its own to remove: stale sockets of its
// user, in real directories of its user that nobody else may write to. It
// runs as root too, over directories anyone may name ($UHMM_RUNTIME_DIR) or
// make first (/tmp/uhmm-UID), so a symlink, a file that is named like a
// socket, or another user's directory must come out of it untouched.
//
// "Scanned" is seen from outside: a socket named after a live pid (this
// test's own) that nobody listens on is listed, with its error, when hmmctl
// read its directory, and not at all when it did not.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>

#include "fixture.hpp"

using namespace uhmm::hmmctl_test;

namespace {

bool exists(const std::string& path) {
    struct stat st{};
    return ::lstat(path.c_str(), &st) == 0;
}

// A pid at or below `from` that no process has (a process killed by a
// signal left a socket with that name).
pid_t gone_pid(pid_t from) {
    for (pid_t p = from; p > 1; --p)
        if (::kill(p, 0) != 0 && errno == ESRCH) return p;
    return -1;
}

std::string socket_name(pid_t pid) { return std::to_string(pid) + ".sock"; }

bool write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
    return static_cast<bool>(out);
}

// `list --json`, which must succeed.
Ran list(const Fixture& f) {
    const Ran r = f.ctl({"list", "--json"});
    INFO(r.describe());
    REQUIRE(r.status == 0);
    REQUIRE(r.json().contains("processes"));
    return r;
}

bool lists_socket(const Ran& r, const std::string& path) {
    const auto j = r.json();
    for (const auto& p : j["processes"])
        if (p.value("socket", "") == path) return true;
    return false;
}

// /tmp/uhmm-UID for a uid that has none now, made (mode 0700) and removed
// with everything in it at the end.
class UserTmpDir {
public:
    explicit UserTmpDir(uid_t below) {
        for (uid_t uid = below; uid > 1000; --uid) {
            const std::string path = "/tmp/uhmm-" + std::to_string(uid);
            if (!exists(path) && ::mkdir(path.c_str(), 0700) == 0) {
                uid_ = uid;
                path_ = path;
                return;
            }
        }
    }
    ~UserTmpDir() {
        std::error_code ec;
        if (!path_.empty()) std::filesystem::remove_all(path_, ec);
    }
    UserTmpDir(const UserTmpDir&) = delete;
    UserTmpDir& operator=(const UserTmpDir&) = delete;
    uid_t uid() const { return uid_; }
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    uid_t uid_ = 0;
    std::string path_;
};

// Uids far from any real user's.
constexpr uid_t kOtherUid = 3000000000u, kThirdUid = 3100000000u;

// Two sockets nobody listens on, put in a directory to see what list does
// with it: `stale`, of a pid that is gone (removed if list cleans there),
// and `alive`, named after this process (listed if list reads there).
struct Planted {
    pid_t gone = -1;
    std::string stale, alive;
};

Planted plant(const std::string& dir) {
    Planted p;
    p.gone = gone_pid(99999);
    REQUIRE(p.gone > 0);
    p.stale = dir + "/" + socket_name(p.gone);
    p.alive = dir + "/" + socket_name(::getpid());
    REQUIRE(stale_socket(p.stale));
    REQUIRE(stale_socket(p.alive));
    return p;
}

// `dir` and what was planted in it, given to `uid`.
void give(const std::string& dir, const Planted& p, uid_t uid) {
    for (const auto& path : {p.stale, p.alive, dir}) REQUIRE(::lchown(path.c_str(), uid, uid) == 0);
}

}  // namespace

TEST_CASE("list removes a stale socket of ours and keeps what is not one", "[list-safety]") {
    Fixture f;
    const pid_t a = gone_pid(99999), b = gone_pid(a - 1), c = gone_pid(b - 1), d = gone_pid(c - 1),
                e = gone_pid(d - 1);
    REQUIRE(e > 0);
    const std::string stale = f.socket_of(a);
    REQUIRE(stale_socket(stale));
    const std::string file = f.socket_of(b);   // a regular file, "99999.sock" say
    REQUIRE(write_file(file, "not a socket\n"));
    const std::string outside = f.dir().file("outside.sock");   // stale, but not in the directory
    REQUIRE(stale_socket(outside));
    const std::string link = f.socket_of(c);
    REQUIRE(::symlink(outside.c_str(), link.c_str()) == 0);
    const std::string theirs = f.socket_of(d);   // stale, but another uid's
    REQUIRE(stale_socket(theirs));
    REQUIRE(::lchown(theirs.c_str(), kOtherUid, kOtherUid) == 0);
    // Its pid is gone here, but someone listens on it (a process of another
    // pid namespace, say): not stale.
    const std::string served = f.socket_of(e);
    const int listener = bound_socket(served);
    REQUIRE(listener >= 0);
    REQUIRE(::listen(listener, 1) == 0);

    const Ran r = list(f);
    ::close(listener);
    INFO(r.describe());
    CHECK_FALSE(exists(stale));   // ours, its process gone, nobody answers: removed
    CHECK(read_file(file) == "not a socket\n");
    CHECK(exists(link));
    CHECK(exists(outside));
    CHECK(exists(theirs));
    CHECK(exists(served));
    CHECK_FALSE(lists_socket(r, file));
    CHECK_FALSE(lists_socket(r, link));
}

TEST_CASE("list does not follow a runtime directory that is a symlink", "[list-safety]") {
    Fixture f;
    const std::string real = f.dir().file("real");
    REQUIRE(::mkdir(real.c_str(), 0700) == 0);
    const std::string evil = f.dir().file("evil");
    REQUIRE(::symlink(real.c_str(), evil.c_str()) == 0);
    const Planted planted = plant(real);
    const std::string file = real + "/" + socket_name(gone_pid(planted.gone - 1));
    REQUIRE(write_file(file, "keep me\n"));

    ::setenv("UHMM_RUNTIME_DIR", evil.c_str(), 1);
    const Ran r = list(f);
    ::setenv("UHMM_RUNTIME_DIR", f.run_dir().c_str(), 1);
    INFO(r.describe());
    // Not read at all: nothing removed, not even the stale socket, and
    // nothing listed from it.
    CHECK(read_file(file) == "keep me\n");
    CHECK(exists(planted.stale));
    CHECK(exists(planted.alive));
    CHECK_FALSE(lists_socket(r, evil + "/" + socket_name(::getpid())));
    CHECK_FALSE(lists_socket(r, planted.alive));
}

TEST_CASE("list neither reads nor cleans a runtime directory owned by another uid", "[list-safety]") {
    Fixture f;
    const std::string theirs = f.dir().file("theirs");
    REQUIRE(::mkdir(theirs.c_str(), 0700) == 0);
    const Planted planted = plant(theirs);
    give(theirs, planted, kOtherUid);

    ::setenv("UHMM_RUNTIME_DIR", theirs.c_str(), 1);
    const Ran r = list(f);
    ::setenv("UHMM_RUNTIME_DIR", f.run_dir().c_str(), 1);
    INFO(r.describe());
    CHECK(exists(planted.stale));
    CHECK_FALSE(lists_socket(r, planted.alive));
}

TEST_CASE("root lists another user's /tmp/uhmm-UID but removes nothing there", "[list-safety]") {
    Fixture f;
    UserTmpDir other(kOtherUid);
    REQUIRE(!other.path().empty());
    const Planted planted = plant(other.path());
    give(other.path(), planted, other.uid());

    const Ran r = list(f);
    INFO(r.describe());
    CHECK(lists_socket(r, planted.alive));   // root lists every user's processes...
    CHECK(exists(planted.stale));            // ...and cleans up after none of them
    CHECK(exists(planted.alive));
}

TEST_CASE("list skips a /tmp/uhmm-UID that UID does not own, or that others may write to", "[list-safety]") {
    Fixture f;
    UserTmpDir trap(kThirdUid);   // made by someone else first
    REQUIRE(!trap.path().empty());
    const Planted planted = plant(trap.path());
    SECTION("owned by another uid than its name says") { give(trap.path(), planted, kOtherUid); }
    SECTION("owned by its uid, but writable by everyone") {
        give(trap.path(), planted, trap.uid());
        REQUIRE(::chmod(trap.path().c_str(), 01777) == 0);
    }
    const Ran r = list(f);
    INFO(r.describe());
    CHECK_FALSE(lists_socket(r, planted.alive));
    CHECK(exists(planted.stale));
}
