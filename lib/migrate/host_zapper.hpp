// HostZapper: takes host pages out of managed memory without a Remove event.
//
// MADV_DONTNEED on registered memory sends UFFD_EVENT_REMOVE and blocks until
// a fault thread reads it. So it cannot run under a block lock that a fault
// handler may be waiting for, and its event looks exactly like the
// application's own DONTNEED (self_zaps.hpp tells them apart, imperfectly).
// UFFDIO_MOVE takes the pages out instead: no event, no reader needed. It can
// run under the block lock, which makes "look at the page's flags, then zap
// it" atomic against the fault thread.
//
// The pages land in a scratch area registered with a second userfaultfd. That
// fd has no event features, so a DONTNEED of the scratch is a plain zap. Its
// mmap_changing counter never moves either, so MOVE never says EAGAIN while
// an application event waits to be read (the fault thread may be the caller).
//
// Only pages that pagemap shows present or swapped are moved (see zap()).
// MOVE refuses some pages. EBUSY: not exclusively ours (shared with a fork()ed
// child until copy-on-write, KSM, pinned). EINVAL: a protection that differs
// from the scratch's (read-only, mlocked). For those, zap() reports where it
// stopped and the caller falls back to MADV_DONTNEED.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include <uhmm/fd.hpp>
#include <uhmm/uffd.hpp>

namespace uhmm::migrate {

class HostZapper {
public:
    // nullptr when the kernel has no UFFDIO_MOVE (before 6.8) or the scratch
    // cannot be set up; `why` says which.
    static std::unique_ptr<HostZapper> create(std::string* why = nullptr);
    ~HostZapper();
    HostZapper(const HostZapper&) = delete;
    HostZapper& operator=(const HostZapper&) = delete;

    struct Outcome {
        std::size_t bytes = 0;   // zapped (or already absent) from the start of the range
        int error = 0;           // why the page at `bytes` was not: 0 when all were
    };

    // Zap [addr, addr+len) (page-aligned, private anonymous memory): present
    // and swapped pages are freed, absent ones skipped. Never allocates or
    // waits for another thread, so it may run on a fault thread under locks.
    // `absent`, when given (a bit per page of the range, cleared by the
    // caller), gets the pages that were not there to zap: something else
    // took them first (the application's DONTNEED, munmap or mremap, whose
    // event may not be handled yet), so what was copied from them is no
    // longer their content.
    Outcome zap(std::uintptr_t addr, std::size_t len, std::uint64_t* absent = nullptr) noexcept;

    // Its descriptors (a fork()ed child closes them).
    int fd() const noexcept { return uffd_.fd(); }
    int pagemap_fd() const noexcept { return pagemap_.get(); }

private:
    static constexpr std::size_t kSlots = 16;
    static constexpr std::size_t kSlotBytes = std::size_t{2} << 20;

    HostZapper(uffd::Uffd uffd, Fd pagemap, std::byte* scratch) noexcept
        : uffd_(std::move(uffd)), pagemap_(std::move(pagemap)), scratch_(scratch) {}
    std::byte* acquire() noexcept;
    std::size_t move_run(std::byte* slot, std::uintptr_t at, std::size_t pages, int& error,
                         std::uint64_t* absent, std::size_t first_bit) noexcept;
    void release(std::byte* slot) noexcept;

    uffd::Uffd uffd_;
    Fd pagemap_;
    std::byte* scratch_;   // kSlots * kSlotBytes
    std::array<std::atomic<bool>, kSlots> busy_{};
};

}  // namespace uhmm::migrate
