// The memfd backend: a shmem memfd, mapped chunk by chunk into the arena's
// reservation. Also what the hugepage backend falls back to, optionally with
// MADV_HUGEPAGE on each chunk (shmem THP), carrying the fallback's reason in
// its description.
//
// io_uring reads and writes work on it (ArenaKind::memfd), which is why the
// copy engine prefers it to hugetlb for writes.
#include <sys/mman.h>

#include <uhmm/fd.hpp>

#include "devmem/backend.hpp"
#include "devmem/reservation.hpp"
#include "base/private_fds.hpp"

namespace uhmm::devmem {

namespace {

class MemfdBackend final : public ArenaBackend {
public:
    MemfdBackend(Fd fd, Reservation res, bool thp, std::string note)
        : fd_(std::move(fd)), res_(std::move(res)), thp_(thp), note_(std::move(note)) {}

    std::error_code map_chunk(std::size_t index) override {
        return res_.map_file_chunk(index, fd_.get(), thp_);
    }

    ArenaView view() const override {
        ArenaView v;
        v.kind = ArenaKind::memfd;
        v.fd = fd_.get();
        v.base = res_.base();
        return v;
    }

    std::string describe() const override {
        std::string text = thp_ ? "shmem memfd with MADV_HUGEPAGE (THP)" : "shmem memfd (4 KiB pages)";
        if (!note_.empty()) text += "; " + note_;
        return text;
    }

private:
    Fd fd_;
    Reservation res_;
    bool thp_;
    std::string note_;
};

}  // namespace

Result<std::unique_ptr<ArenaBackend>> make_memfd_backend(const ArenaSpec& spec, bool thp_advise,
                                                    std::string note, std::string* why) {
    Fd fd(base::hide_fd(::memfd_create("uhmm-arena", MFD_CLOEXEC)));
    if (!fd) {
        const auto ec = last_errno();
        if (why) *why = describe_error("memfd: memfd_create", ec);
        return ec;
    }
    auto res = Reservation::create(spec.size);
    if (!res) {
        if (why) *why = describe_error("memfd: reserving " + std::to_string(spec.size >> 20) + " MiB of address space", res.error());
        return res.error();
    }
    auto backend = std::make_unique<MemfdBackend>(std::move(fd), std::move(*res), thp_advise, std::move(note));
    return finish_backend(std::move(backend), spec, "memfd", why);
}

}  // namespace uhmm::devmem
