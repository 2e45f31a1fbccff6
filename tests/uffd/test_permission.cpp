// What an unprivileged process is told when userfaultfd is refused, and the
// /dev/userfaultfd way in. Needs root: it drops to uid/gid 65534 (nobody) in a
// child, and sets vm.unprivileged_userfaultfd and /dev/userfaultfd's mode for
// the duration of a case, restoring both.
#include <catch2/catch.hpp>

#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <string>

#include "fixture.hpp"
#include "skip.hpp"

using namespace uhmm;

std::optional<std::string> uhmm_test_skip_reason() {
    if (::geteuid() != 0) return "needs root to drop privileges and set vm.unprivileged_userfaultfd";
    if (::access("/proc/sys/vm/unprivileged_userfaultfd", W_OK) != 0)
        return "vm.unprivileged_userfaultfd is not writable here";
    return std::nullopt;
}

namespace {

std::string read_file(const char* path) {
    std::ifstream in(path);
    std::string s;
    std::getline(in, s);
    return s;
}

void write_file(const char* path, const std::string& v) {
    std::ofstream out(path);
    out << v << "\n";
}

// Sets a sysctl for the scope, restoring the old value.
struct ScopedSysctl {
    const char* path;
    std::string old;
    ScopedSysctl(const char* p, const std::string& v) : path(p), old(read_file(p)) { write_file(p, v); }
    ~ScopedSysctl() { write_file(path, old); }
};

struct ScopedMode {
    const char* path;
    mode_t old = 0;
    bool ok = false;
    ScopedMode(const char* p, mode_t m) : path(p) {
        struct stat st{};
        if (::stat(p, &st) == 0) {
            old = st.st_mode & 07777;
            ok = ::chmod(p, m) == 0;
        }
    }
    ~ScopedMode() { if (ok) ::chmod(path, old); }
};

struct ChildResult {
    int status = -1;
    std::string output;   // what the child wrote to the pipe
};

// Runs `fn` as uid/gid 65534 in a child; returns its exit status and output.
template <class Fn> ChildResult as_nobody(Fn fn) {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    const pid_t child = ::fork();
    if (child == 0) {
        ::close(p[0]);
        if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(99);
        std::string out;
        const int rc = fn(out);
        (void)!::write(p[1], out.data(), out.size());
        ::_exit(rc);
    }
    ::close(p[1]);
    ChildResult r;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(p[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<std::size_t>(n));
    ::close(p[0]);
    ::waitpid(child, &r.status, 0);
    return r;
}

}  // namespace

TEST_CASE("an unprivileged process is refused with EPERM and told each way out") {
    ScopedSysctl sysctl("/proc/sys/vm/unprivileged_userfaultfd", "0");
    ScopedMode dev("/dev/userfaultfd", 0600);
    auto r = as_nobody([](std::string& out) {
        auto u = uffd::Uffd::open();
        out = uffd::probe().reason;
        if (u.ok()) return 1;
        return u.error() == std::errc::operation_not_permitted ? 0 : 2;
    });
    INFO(r.output);
    REQUIRE(WIFEXITED(r.status));
    CHECK(WEXITSTATUS(r.status) == 0);
    CHECK(r.output.find("CAP_SYS_PTRACE") != std::string::npos);
    CHECK(r.output.find("/dev/userfaultfd") != std::string::npos);
    CHECK(r.output.find("vm.unprivileged_userfaultfd=1 (now 0)") != std::string::npos);
    CHECK(r.output.find('\n') == std::string::npos);   // one line
}

TEST_CASE("an unprivileged process with access to /dev/userfaultfd gets one that serves kernel faults") {
    ScopedSysctl sysctl("/proc/sys/vm/unprivileged_userfaultfd", "0");
    ScopedMode dev("/dev/userfaultfd", 0666);
    if (!dev.ok) {
        WARN("no /dev/userfaultfd here (kernel < 5.19): not covered");
        return;
    }
    auto r = as_nobody([](std::string& out) {
        auto u = uffd::Uffd::open();
        if (!u.ok()) {
            out = uffd::probe().reason;
            return 1;
        }
        out = uffd::probe().path == uffd::OpenPath::dev_userfaultfd ? "dev" : "syscall";
        // Fork events need CAP_SYS_PTRACE: negotiated away, not fatal.
        return u->has(uffd::feature::event_fork) ? 3 : 0;
    });
    INFO(r.output);
    REQUIRE(WIFEXITED(r.status));
    CHECK(WEXITSTATUS(r.status) == 0);
    CHECK(r.output == "dev");
}
