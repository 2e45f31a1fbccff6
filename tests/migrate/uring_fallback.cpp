// When io_uring is blocked (here by a seccomp filter, as a container runtime
// might install), the probe says why and the automatic factory falls back to
// memcpy, while an explicit request for io_uring gets the error. Each case
// runs in a forked child, because a seccomp filter cannot be removed.
#include <catch2/catch.hpp>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>

#include "arena_fixture.hpp"
#include "migrate/uring_probe.hpp"

using namespace uhmm;
using namespace uhmm::test;

namespace {

// Make io_uring_setup fail with `err` in this process, as seccomp would.
bool block_io_uring(int err) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | static_cast<unsigned>(err)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
    return ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

// Run `body` in a child under the filter; its return value is the exit code.
template <class F>
int in_blocked_child(int err, F body) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        if (!block_io_uring(err)) std::_Exit(100);
        std::_Exit(body());
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("the io_uring probe names seccomp when io_uring_setup is refused") {
    const int err = GENERATE(EPERM, ENOSYS);
    CHECK(in_blocked_child(err, [err] {
              const auto s = migrate::detail::probe_uring_uncached();
              if (s.available) return 1;
              if (s.error.value() != err) return 2;
              if (s.reason.find("seccomp") == std::string::npos) return 3;
              return 0;
          }) == 0);
}

TEST_CASE("the automatic factory falls back to memcpy when io_uring is blocked, and still copies") {
    CHECK(in_blocked_child(ENOSYS, [] {
              auto arena = FileArena::create(1u << 20);
              if (!arena) return 1;
              if (migrate::uring_support().available) return 2;
              auto e = migrate::make_copy_engine(migrate::EngineKind::automatic, arena->view);
              if (!e.ok() || (*e)->kind() != migrate::EngineKind::memcpy) return 3;
              auto host = map_anon(kPage);
              fill(host.bytes(), 81);
              const migrate::CopyOp op{host.data(), kPage, kPage};
              if ((*e)->submit(migrate::Direction::to_device, {&op, 1}).wait()) return 4;
              if (mismatch(arena->map.bytes().subspan(kPage, kPage), 81) != -1) return 5;
              return 0;
          }) == 0);
}

TEST_CASE("an explicit io_uring request is refused with the probe's error when io_uring is blocked") {
    CHECK(in_blocked_child(ENOSYS, [] {
              auto arena = FileArena::create(1u << 20);
              if (!arena) return 1;
              auto e = migrate::make_copy_engine(migrate::EngineKind::uring, arena->view);
              return e.error() == std::errc::function_not_supported ? 0 : 2;
          }) == 0);
}

TEST_CASE("the io_uring probe reports io_uring usable here") {
    // The tests above would pass vacuously if the probe always said no.
    const auto s = migrate::detail::probe_uring_uncached();
    INFO(s.reason);
    CHECK(s.available);
}
