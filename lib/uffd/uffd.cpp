// Uffd: opening with feature negotiation, registration, and the resolve
// ioctls. Each ioctl is wrapped once here and its result classified in
// outcome.cpp; nothing is retried here (the caller knows whether a retry makes
// sense: the monitor parks faults, a migration re-walks its range).
#include <sys/ioctl.h>

#include <algorithm>
#include <cstdlib>
#include <array>
#include <atomic>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "base/log.hpp"
#include "uffd/compat.hpp"
#include "uffd/outcome.hpp"
#include "uffd/raw.hpp"
#include "base/private_fds.hpp"

namespace uhmm::uffd {

using detail::classify;

namespace {

std::uint64_t as_u64(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

}  // namespace

// Remap destinations noted by the reader: a fixed array claimed slot by slot
// with an atomic counter, so the reader never allocates or waits. When it
// fills up, later moves are lost and unregister_all() says so.
struct Uffd::Moves {
    static constexpr std::size_t kCapacity = 1024;
    std::array<Remap, kCapacity> slots{};
    std::atomic<std::size_t> claimed{0};
    std::atomic<std::size_t> published{0};
};

Uffd::Uffd(Fd fd, std::uint64_t features) noexcept
    : fd_(std::move(fd)), features_(features), reg_lock_(std::make_unique<std::mutex>()),
      moves_(std::make_unique<Moves>()) {}
Uffd::Uffd(Uffd&&) noexcept = default;
Uffd& Uffd::operator=(Uffd&&) noexcept = default;
Uffd::~Uffd() = default;

Result<Uffd> Uffd::open(const OpenOptions& options) {
    const Probe& p = probe();
    if (!p.available) return p.error;

    if (const auto missing = options.required & ~p.features) {
        log::get().error("userfaultfd: this kernel lacks required features: {}", feature_names(missing));
        return errno_code(ENOTSUP);
    }
    std::uint64_t want = (options.wanted | options.required) & p.features;

    for (;;) {
        OpenPath path = OpenPath::none;
        auto fd = detail::open_raw(path);
        if (!fd) return fd.error();
        auto api = detail::handshake(fd->get(), want);
        if (api) return Uffd(Fd(base::hide_fd(fd->release())), want);
        // EVENT_FORK needs CAP_SYS_PTRACE even where the fd itself was allowed
        // (/dev/userfaultfd): without it, do without fork events if allowed.
        if (api.error().value() == EPERM && (want & feature::event_fork) &&
            !(options.required & feature::event_fork)) {
            log::get().warn("userfaultfd: fork events need CAP_SYS_PTRACE; continuing without them");
            want &= ~feature::event_fork;
            continue;
        }
        return api.error();
    }
}

Uffd Uffd::adopt(Fd fd, std::uint64_t features) { return Uffd(std::move(fd), features); }

Result<std::uint64_t> Uffd::register_range(void* addr, std::size_t len, std::uint32_t modes) {
    uffdio_register reg{};
    reg.range.start = as_u64(addr);
    reg.range.len = len;
    if (modes & Mode::missing) reg.mode |= UFFDIO_REGISTER_MODE_MISSING;
    if (modes & Mode::wp) reg.mode |= UFFDIO_REGISTER_MODE_WP;
    if (::ioctl(fd_.get(), UFFDIO_REGISTER, &reg) != 0) return last_errno();
    std::lock_guard lock(*reg_lock_);
    registered_.push_back({as_u64(addr), len});
    return reg.ioctls;
}

std::error_code Uffd::unregister_range(void* addr, std::size_t len) {
    uffdio_range range{as_u64(addr), len};
    if (::ioctl(fd_.get(), UFFDIO_UNREGISTER, &range) != 0) return last_errno();
    // Forget what was unregistered: drop covered registrations, trim the
    // ones that straddle an edge.
    const std::uintptr_t lo = as_u64(addr), hi = lo + len;
    std::lock_guard lock(*reg_lock_);
    std::vector<Registration> kept;
    for (const auto& r : registered_) {
        const std::uintptr_t rlo = r.start, rhi = r.start + r.len;
        if (rhi <= lo || rlo >= hi) { kept.push_back(r); continue; }
        if (rlo < lo) kept.push_back({rlo, lo - rlo});
        if (rhi > hi) kept.push_back({hi, rhi - hi});
    }
    registered_.swap(kept);
    return {};
}

void Uffd::note_remap(const Remap& remap) noexcept {
    const std::size_t slot = moves_->claimed.fetch_add(1, std::memory_order_relaxed);
    if (slot >= Moves::kCapacity) return;
    moves_->slots[slot] = remap;
    moves_->published.fetch_add(1, std::memory_order_release);
}

namespace {

// The [start, end) of every mapping in /proc/self/maps.
std::vector<std::pair<std::uintptr_t, std::uintptr_t>> current_mappings() {
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> out;
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
        char* end = nullptr;
        const auto lo = std::strtoull(line.c_str(), &end, 16);
        if (!end || *end != '-') continue;
        const auto hi = std::strtoull(end + 1, nullptr, 16);
        out.emplace_back(lo, hi);
    }
    return out;
}

}  // namespace

void Uffd::unregister_all() noexcept {
    if (!fd_) return;
    try {
        // Every place a registration may be now: where it was made, and
        // where mremap moved ranges to.
        std::vector<Registration> candidates;
        {
            std::lock_guard lock(*reg_lock_);
            candidates.swap(registered_);
        }
        const std::size_t moved = std::min(moves_->published.load(std::memory_order_acquire), Moves::kCapacity);
        for (std::size_t i = 0; i < moved; ++i)
            candidates.push_back({moves_->slots[i].to, moves_->slots[i].len});
        if (moves_->claimed.load(std::memory_order_relaxed) > Moves::kCapacity)
            log::get().warn("userfaultfd: more than {} ranges moved; some may stay registered", Moves::kCapacity);
        moves_->claimed.store(0, std::memory_order_relaxed);
        moves_->published.store(0, std::memory_order_relaxed);

        // Registration is per mapping: a mapping that overlaps a candidate is
        // unregistered whole, which also covers growth in place (mremap)
        // that no event reports. A mapping that is not registered is skipped
        // by the kernel; one that cannot be (a file mapping) answers EINVAL
        // and is left as it is.
        std::set<std::pair<std::uintptr_t, std::uintptr_t>> targets;
        for (const auto& [lo, hi] : current_mappings())
            for (const auto& c : candidates)
                if (lo < c.start + c.len && c.start < hi) targets.emplace(lo, hi);
        for (const auto& [lo, hi] : targets) {
            uffdio_range range{lo, hi - lo};
            (void)::ioctl(fd_.get(), UFFDIO_UNREGISTER, &range);
        }
    } catch (...) {
        // Out of memory while reading /proc: fall back to what we know.
        std::lock_guard lock(*reg_lock_);
        for (const auto& r : registered_) {
            uffdio_range range{r.start, r.len};
            (void)::ioctl(fd_.get(), UFFDIO_UNREGISTER, &range);
        }
        registered_.clear();
    }
}

Outcome Uffd::copy(void* dst, const void* src, std::size_t len, bool wake, bool write_protect) noexcept {
    uffdio_copy c{};
    c.dst = as_u64(dst);
    c.src = as_u64(src);
    c.len = len;
    c.mode = (wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE) | (write_protect ? UFFDIO_COPY_MODE_WP : 0);
    const int rc = ::ioctl(fd_.get(), UFFDIO_COPY, &c);
    return classify(rc, errno, c.copy, len);
}

Outcome Uffd::zeropage(void* dst, std::size_t len, bool wake) noexcept {
    uffdio_zeropage z{};
    z.range = {as_u64(dst), len};
    z.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE;
    const int rc = ::ioctl(fd_.get(), UFFDIO_ZEROPAGE, &z);
    return classify(rc, errno, z.zeropage, len);
}

Outcome Uffd::writeprotect(void* addr, std::size_t len, bool protect, bool wake) noexcept {
    uffdio_writeprotect w{};
    w.range = {as_u64(addr), len};
    w.mode = (protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0) | (wake ? 0 : UFFDIO_WRITEPROTECT_MODE_DONTWAKE);
    const int rc = ::ioctl(fd_.get(), UFFDIO_WRITEPROTECT, &w);
    // No count field: all or nothing.
    return classify(rc, errno, 0, len);
}

Outcome Uffd::wake(void* addr, std::size_t len) noexcept {
    uffdio_range r{as_u64(addr), len};
    const int rc = ::ioctl(fd_.get(), UFFDIO_WAKE, &r);
    return classify(rc, errno, 0, len);
}

Outcome Uffd::move(void* dst, void* src, std::size_t len, bool wake, bool allow_src_holes) noexcept {
    if (!has(feature::move)) return {Status::failed, 0, ENOTSUP};
    uffdio_move m{};
    m.dst = as_u64(dst);
    m.src = as_u64(src);
    m.len = len;
    m.mode = (wake ? 0 : UFFDIO_MOVE_MODE_DONTWAKE) | (allow_src_holes ? UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES : 0);
    const int rc = ::ioctl(fd_.get(), UFFDIO_MOVE, &m);
    return classify(rc, errno, m.move, len);
}

Outcome Uffd::poison(void* dst, std::size_t len, bool wake) noexcept {
    if (!has(feature::poison)) return {Status::failed, 0, ENOTSUP};
    uffdio_poison p{};
    p.range = {as_u64(dst), len};
    p.mode = wake ? 0 : UFFDIO_POISON_MODE_DONTWAKE;
    const int rc = ::ioctl(fd_.get(), UFFDIO_POISON, &p);
    return classify(rc, errno, p.updated, len);
}

}  // namespace uhmm::uffd
