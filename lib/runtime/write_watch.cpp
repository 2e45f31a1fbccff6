// Runtime::watch_writes / take_writes: which host-resident pages the program
// writes, through the runtime's own write protection (see runtime.hpp).
//
// The fault path's half is in fault_handler.cpp: a write-protect fault on a
// HOST page flagged kWatched turns the flag into kWritten and lets the write
// through. Migrations and discards reset a page's flags, so a page that
// moved carries neither.
#include <algorithm>

#include "runtime/page_walk.hpp"
#include "runtime/runtime_impl.hpp"

namespace uhmm {

using space::kPage;

Result<std::size_t> Runtime::watch_writes(const void* addr, std::size_t len) {
    Impl& rt = *impl_;
    if (rt.forked_child.load(std::memory_order_acquire)) return std::size_t{0};
    std::size_t watched = 0;
    auto ec = for_each_block(rt.space, addr, len, [&](space::ManagedRange& r, std::size_t first, std::size_t last) {
        // Under the block's lock, so that no migration takes a page between
        // the check and the protection, and the fault path sees the flag
        // before the first write can fault. The ioctl is not retried here:
        // EAGAIN means an address-space change waits for the fault thread,
        // which may be waiting for this lock.
        std::lock_guard lock(r.lock_for(first));
        for (std::size_t p = first; p < last;) {
            auto wanted = [&](std::size_t q) {
                const space::PageEntry& e = r.entry(q);
                return e.state == PageState::host && !(e.flags & (space::kWatched | space::kUnmapped));
            };
            if (!wanted(p)) {
                ++p;
                continue;
            }
            std::size_t q = p + 1;
            while (q < last && wanted(q)) ++q;
            const auto o = rt.uffd->writeprotect(reinterpret_cast<void*>(r.address_of(p)), (q - p) * kPage, true);
            if (o.ok()) {
                for (std::size_t k = p; k < q; ++k) r.entry(k).flags |= space::kWatched;
                watched += q - p;
            }
            p = q;
        }
    });
    if (ec) return ec;
    return watched;
}

std::error_code Runtime::take_writes(const void* addr, std::size_t len, std::span<std::uint8_t> written) {
    const auto start = reinterpret_cast<std::uintptr_t>(addr) & ~(std::uintptr_t{kPage} - 1);
    const auto end = reinterpret_cast<std::uintptr_t>(addr) + len;
    if (written.size() < (end - start + kPage - 1) / kPage) return errno_code(EINVAL);
    return for_each_block(impl_->space, addr, len, [&](space::ManagedRange& r, std::size_t first, std::size_t last) {
        std::lock_guard lock(r.lock_for(first));
        for (std::size_t p = first; p < last; ++p) {
            space::PageEntry& e = r.entry(p);
            written[(r.address_of(p) - start) / kPage] = (e.flags & space::kWritten) ? 1 : 0;
            e.flags = static_cast<std::uint8_t>(e.flags & ~space::kWritten);
        }
    });
}

}  // namespace uhmm
