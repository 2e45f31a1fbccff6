// The hugepage backend: a MFD_HUGETLB memfd of 2 MiB pages, and its fallbacks.
//
// Huge pages must exist in the kernel's pool before they can be mapped, and
// on most machines the pool is empty (nr_hugepages = 0). So at creation the
// backend checks the pool for the initial chunks; when short, it raises
// nr_hugepages itself only if the spec allows it (arena_reserve=on; needs
// root), and otherwise falls back to a shmem memfd — THP-advised when
// shmem_enabled lets MADV_HUGEPAGE work, plain when it does not — saying once,
// in the log, why, and always in describe(). Growth later reserves one page
// per chunk the same way; whatever it reserved is given back at destruction.
#include <linux/memfd.h>   // MFD_HUGE_2MB (glibc's <sys/mman.h> lacks it)
#include <sys/mman.h>

#include <atomic>
#include <fstream>

#include <uhmm/fd.hpp>

#include "base/log.hpp"
#include "devmem/backend.hpp"
#include "devmem/hugetlb_pool.hpp"
#include "devmem/reservation.hpp"
#include "base/private_fds.hpp"

namespace uhmm::devmem {

namespace {

class HugetlbBackend final : public ArenaBackend {
public:
    HugetlbBackend(Fd fd, Reservation res, HugetlbPool pool, bool may_reserve, long added)
        : fd_(std::move(fd)), res_(std::move(res)), pool_(std::move(pool)), may_reserve_(may_reserve),
          added_(added) {}

    ~HugetlbBackend() override {
        // Pages are free only once nothing maps or holds them.
        res_.reset();
        fd_.reset();
        const long added = added_.load();
        if (auto ec = pool_.remove(added)) {
            log::get().warn("arena: could not give back {} reserved huge pages: {}", added, ec.message());
        }
    }

    std::error_code map_chunk(std::size_t index) override {
        auto ec = res_.map_file_chunk(index, fd_.get(), false);
        if (ec == std::errc::not_enough_memory && may_reserve_) {
            std::string why;
            auto granted = pool_.add(1, &why);
            if (granted && *granted > 0) {
                added_.fetch_add(*granted);
                ec = res_.map_file_chunk(index, fd_.get(), false);
            }
        }
        // Say why, rather than a bare ENOMEM next to an arena far from full.
        if (ec == std::errc::not_enough_memory) return Errc::pool_empty;
        return ec;
    }

    ArenaView view() const override {
        ArenaView v;
        v.kind = ArenaKind::hugetlb;
        v.fd = fd_.get();
        v.base = res_.base();
        return v;
    }

    std::string describe() const override {
        std::string text = "hugetlb memfd (2 MiB pages)";
        if (const long added = added_.load(); added > 0) {
            text += "; reserved " + std::to_string(added) + " huge pages in " + pool_.dir() +
                    " (given back when the arena goes)";
        }
        return text;
    }

private:
    Fd fd_;
    Reservation res_;
    HugetlbPool pool_;
    bool may_reserve_;
    std::atomic<long> added_;   // pages this arena added to the pool; describe() reads it any time
};

// The bracketed word of a sysfs THP setting ("always [advise] never" → advise).
std::string thp_setting(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    if (!std::getline(in, line)) return {};
    const auto open = line.find('['), close = line.find(']');
    if (open == std::string::npos || close == std::string::npos || close < open) return {};
    return line.substr(open + 1, close - open - 1);
}

// Whether MADV_HUGEPAGE gets shmem huge pages; when not, `*why` says so.
bool shmem_thp_advisable(std::string* why) {
    const std::string per_size = "/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled";
    const std::string global = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
    std::string path = per_size;
    std::string value = thp_setting(per_size);
    if (value.empty() || value == "inherit") {
        path = global;
        value = thp_setting(global);
    }
    if (value == "always" || value == "within_size" || value == "advise" || value == "force") return true;
    *why = value.empty() ? "no shmem THP control in /sys/kernel/mm/transparent_hugepage"
                         : "shmem THP is '" + value + "' in " + path;
    return false;
}

// memfd + reservation + initial chunks; takes over `added` once the backend
// exists (its destructor gives the pages back on any later failure).
Result<std::unique_ptr<ArenaBackend>> try_hugetlb(const ArenaSpec& spec, const HugetlbPool& pool, long& added,
                                             std::string* why) {
    Fd fd(base::hide_fd(::memfd_create("uhmm-arena", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB)));
    if (!fd) {
        const auto ec = last_errno();
        *why = describe_error("memfd_create(MFD_HUGETLB)", ec);
        return ec;
    }
    auto res = Reservation::create(spec.size);
    if (!res) {
        *why = describe_error("reserving address space", res.error());
        return res.error();
    }
    auto backend = std::make_unique<HugetlbBackend>(std::move(fd), std::move(*res), pool, spec.reserve,
                                                    std::exchange(added, 0));
    if (auto ec = map_initial(*backend, spec, why)) return ec;
    return std::unique_ptr<ArenaBackend>(std::move(backend));
}

// Why the pool cannot serve the initial chunks ("" when it can), reserving
// pages first when the spec allows it.
std::string check_pool(const ArenaSpec& spec, const HugetlbPool& pool, long& added) {
    const long need = static_cast<long>(spec.initial / kChunkSize);
    auto counts = pool.read();
    if (!counts) return describe_error("reading the 2 MiB huge page pool in " + pool.dir(), counts.error());
    const long short_by = need - counts->available();
    if (short_by <= 0) return {};
    const std::string state = std::to_string(need) + " needed, " + std::to_string(counts->available()) +
                              " available, nr_hugepages=" + std::to_string(counts->total);
    if (!spec.reserve) {
        return "not enough free 2 MiB huge pages (" + state +
               "); arena_reserve=on lets the runtime reserve them as root";
    }
    std::string sub;
    auto granted = pool.add(short_by, &sub);
    if (!granted) return "not enough free 2 MiB huge pages (" + state + ") and reserving more failed: " + sub;
    added = *granted;
    if (added < short_by) {
        return "not enough free 2 MiB huge pages (" + state + ") and the kernel granted only " +
               std::to_string(added) + " of " + std::to_string(short_by) + " (memory too fragmented?)";
    }
    return {};
}

}  // namespace

Result<std::unique_ptr<ArenaBackend>> make_hugetlb_backend(const ArenaSpec& spec, std::string* why) {
    const HugetlbPool pool(spec.hugetlb_pool);
    long added = 0;
    std::string reason = check_pool(spec, pool, added);
    if (reason.empty()) {
        auto backend = try_hugetlb(spec, pool, added, &reason);
        if (backend) return backend;
    }
    if (added > 0) pool.remove(added);

    std::string thp_why;
    const bool thp = shmem_thp_advisable(&thp_why);
    std::string note = "hugepage unavailable: " + reason + "; fell back to " +
                       (thp ? "a THP-advised memfd" : "a plain memfd (" + thp_why + ")");
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) log::get().warn("arena: {}", note);
    return make_memfd_backend(spec, thp, std::move(note), why);
}

}  // namespace uhmm::devmem
