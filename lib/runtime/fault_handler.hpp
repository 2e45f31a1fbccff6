// The runtime's userfaultfd handler: the fault path (first touch, device
// pages coming home, writes waiting for a migration) and the application's
// own changes to its memory (madvise, munmap, mremap).
//
// Runs on the monitor's reader threads, so it follows their rules: no heap
// allocation (new ranges are anonymous mappings), no waiting for application
// threads (block locks are only ever held for state changes and ioctls that
// cannot fault), async logging only.
#pragma once

#include <uhmm/uffd.hpp>

#include "runtime/runtime_impl.hpp"

namespace uhmm {

class FaultHandler final : public uffd::Handler {
public:
    explicit FaultHandler(Runtime::Impl& rt) noexcept : rt_(rt) {}

    // Counts and times serve().
    uffd::FaultDisposition on_fault(const uffd::PageFault& fault) noexcept override;
    void on_remove(const uffd::Remove& r) noexcept override;
    void on_unmap(const uffd::Unmap& u) noexcept override;
    void on_remap(const uffd::Remap& r) noexcept override;

private:
    uffd::FaultDisposition serve(const uffd::PageFault& fault) noexcept;
    uffd::FaultDisposition first_touch(space::ManagedRange& r, std::size_t page, std::size_t first,
                                       std::size_t last) noexcept;
    uffd::FaultDisposition device_fault(space::ManagedRange& r, std::size_t page, std::size_t first,
                                        std::size_t last) noexcept;
    uffd::FaultDisposition zero_one(std::uintptr_t addr, bool* installed = nullptr) noexcept;
    // Pages [start, end) no longer hold what they held (DONTNEED, munmap).
    void invalidate(std::uintptr_t start, std::uintptr_t end, bool unmapped) noexcept;
    // Where moved pages land: the range holding `addr`, or a new one over the
    // unmanaged gap [addr, limit).
    space::RangeRef destination(std::uintptr_t addr, std::uintptr_t limit, bool owned) noexcept;

    Runtime::Impl& rt_;
};

}  // namespace uhmm
