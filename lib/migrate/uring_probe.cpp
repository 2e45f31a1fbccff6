// The io_uring probe: run once per process (uring_support()), before any
// engine is made, so that "io_uring is unusable here" is said once and
// clearly instead of surfacing as a failed batch later.
//
// What can stop io_uring: the kernel.io_uring_disabled sysctl (2: off for all;
// 1: only for CAP_SYS_ADMIN or the kernel.io_uring_group), a seccomp filter
// (EPERM or ENOSYS from io_uring_setup), a kernel too old for the opcodes we
// use (READ/WRITE 5.6, fixed files and buffers older), or memory limits
// (ENOMEM when the ring cannot be locked). The sysctl is read only to explain
// an EPERM; the ring setup is the test that counts.
#include "migrate/uring_probe.hpp"

#include <liburing.h>

#include <cstring>
#include <fstream>
#include <string>
#include <utility>

namespace uhmm::migrate {

namespace detail {

namespace {

int io_uring_disabled_sysctl() {
    std::ifstream in("/proc/sys/kernel/io_uring_disabled");
    int v = 0;
    if (!(in >> v)) return 0;   // older kernels have no such knob
    return v;
}

UringSupport unusable(int err, std::string reason) {
    UringSupport s;
    s.available = false;
    s.error = errno_code(err);
    s.reason = std::move(reason);
    return s;
}

}  // namespace

UringSupport probe_uring_uncached() {
    io_uring ring;
    const int rc = io_uring_queue_init(4, &ring, 0);
    if (rc < 0) {
        const int err = -rc;
        const int sysctl = io_uring_disabled_sysctl();
        if (err == EPERM && sysctl != 0)
            return unusable(err, "io_uring is disabled by sysctl kernel.io_uring_disabled=" +
                                     std::to_string(sysctl) + " (set it to 0 to allow it)");
        if (err == EPERM || err == ENOSYS)
            return unusable(err, std::string("io_uring_setup refused (") + std::strerror(err) +
                                     "): blocked by seccomp or a kernel without io_uring");
        return unusable(err, std::string("io_uring_setup failed: ") + std::strerror(err));
    }
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    if (probe == nullptr) {
        io_uring_queue_exit(&ring);
        return unusable(ENOSYS, "io_uring has no opcode probe (kernel older than 5.6)");
    }
    std::string missing;
    for (auto [op, name] : {std::pair{IORING_OP_READ, "READ"}, std::pair{IORING_OP_WRITE, "WRITE"},
                            std::pair{IORING_OP_READ_FIXED, "READ_FIXED"},
                            std::pair{IORING_OP_WRITE_FIXED, "WRITE_FIXED"},
                            std::pair{IORING_OP_NOP, "NOP"}}) {
        if (!io_uring_opcode_supported(probe, op)) missing += std::string(missing.empty() ? "" : ", ") + name;
    }
    io_uring_free_probe(probe);
    io_uring_queue_exit(&ring);
    if (!missing.empty()) return unusable(ENOSYS, "io_uring lacks opcodes: " + missing);
    UringSupport s;
    s.available = true;
    return s;
}

}  // namespace detail

const UringSupport& uring_support() {
    static const UringSupport s = detail::probe_uring_uncached();
    return s;
}

}  // namespace uhmm::migrate
