// Probing userfaultfd once per process, and explaining a refusal.
//
// Without UFFD_USER_MODE_ONLY (which uhmm must not use: a read(2) into a
// device-resident page is a kernel-mode fault that must be served), the
// syscall needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1; the
// /dev/userfaultfd device (5.19+) needs only read-write access to the node.
// When all of that fails the user gets one line naming each way out, with the
// values this machine has now, instead of a bare EPERM.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "uffd/compat.hpp"
#include "uffd/raw.hpp"

namespace uhmm::uffd {

namespace detail {

Result<Fd> open_raw(OpenPath& path) {
    const int flags = O_CLOEXEC | O_NONBLOCK;
    const long fd = ::syscall(SYS_userfaultfd, flags);
    if (fd >= 0) {
        path = OpenPath::syscall;
        return Fd(static_cast<int>(fd));
    }
    const int syscall_err = errno;
    if (syscall_err != EPERM && syscall_err != EACCES) return errno_code(syscall_err);

    Fd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
    if (!dev) return errno_code(syscall_err);
    const int ufd = ::ioctl(dev.get(), USERFAULTFD_IOC_NEW, flags);
    if (ufd < 0) return errno_code(syscall_err);
    path = OpenPath::dev_userfaultfd;
    return Fd(ufd);
}

Result<Api> handshake(int fd, std::uint64_t features) {
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = features;
    if (::ioctl(fd, UFFDIO_API, &api) != 0) return last_errno();
    return Api{api.features, api.ioctls};
}

namespace {

std::string read_line(const char* path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

// A field of /proc/self/status ("CapEff", "Seccomp"), or "".
std::string status_field(const char* name) {
    std::ifstream in("/proc/self/status");
    std::string line;
    const std::string key = std::string(name) + ":";
    while (std::getline(in, line)) {
        if (line.rfind(key, 0) == 0) {
            auto v = line.substr(key.size());
            v.erase(0, v.find_first_not_of(" \t"));
            return v;
        }
    }
    return {};
}

bool has_cap_sys_ptrace() {
    const auto eff = status_field("CapEff");
    if (eff.empty()) return false;
    constexpr unsigned kCapSysPtrace = 19;
    return (std::stoull(eff, nullptr, 16) >> kCapSysPtrace) & 1;
}

std::string dev_node_state() {
    struct stat st{};
    if (::stat("/dev/userfaultfd", &st) != 0) return "/dev/userfaultfd does not exist (kernel < 5.19?)";
    char mode[11] = "c---------";
    const char* rwx = "rwxrwxrwx";
    for (int i = 0; i < 9; ++i)
        if (st.st_mode & (0400 >> i)) mode[1 + i] = rwx[i];
    std::ostringstream s;
    s << "read-write access to /dev/userfaultfd (now " << mode << " uid " << st.st_uid << " gid "
      << st.st_gid << (::access("/dev/userfaultfd", R_OK | W_OK) == 0 ? ", accessible" : ", not accessible to you")
      << ")";
    return s.str();
}

}  // namespace

std::string explain_refusal(int err) {
    std::ostringstream s;
    if (err == ENOSYS) {
        s << "userfaultfd is not available: the kernel was built without CONFIG_USERFAULTFD (ENOSYS)";
        return s.str();
    }
    const auto sysctl = read_line("/proc/sys/vm/unprivileged_userfaultfd");
    s << "userfaultfd refused (" << std::strerror(err) << "): serving kernel-mode faults needs "
      << "CAP_SYS_PTRACE (run as root; you are uid " << ::geteuid()
      << (has_cap_sys_ptrace() ? ", with CAP_SYS_PTRACE" : ", without CAP_SYS_PTRACE") << "), or "
      << dev_node_state() << ", or sysctl vm.unprivileged_userfaultfd=1 (now "
      << (sysctl.empty() ? "unknown" : sysctl) << ")";
    const auto seccomp = status_field("Seccomp");
    if (!seccomp.empty() && seccomp != "0")
        s << "; a seccomp filter is active (Seccomp: " << seccomp << ") and may block the syscall";
    return s.str();
}

Probe run_probe() {
    Probe p;
    auto fd = open_raw(p.path);
    if (!fd) {
        p.error = fd.error();
        p.reason = explain_refusal(p.error.value());
        p.path = OpenPath::none;
        return p;
    }
    auto api = handshake(fd->get(), 0);
    if (!api) {
        p.error = api.error();
        p.reason = std::string("UFFDIO_API handshake failed: ") + p.error.message();
        return p;
    }
    p.available = true;
    p.features = api->features;
    p.ioctls = api->ioctls;
    return p;
}

}  // namespace detail

const Probe& probe() {
    static const Probe p = detail::run_probe();
    return p;
}

}  // namespace uhmm::uffd
