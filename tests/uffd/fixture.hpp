// Test fixtures for lib/uffd: an owned anonymous mapping, a byte pattern that
// tells every page apart, and a Handler that serves faults from that pattern
// the way the runtime will (COPY for missing pages, un-protect for WP faults),
// counting what it did so that tests can assert on it.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include <uhmm/uffd.hpp>

namespace uhmm::test {

inline constexpr std::size_t kPage = 4096;

// Waits up to 10 s for `pred`: an event's caller returns once the event is
// read, which may be before the handler has run.
template <class Pred> bool eventually(Pred pred) {
    for (int i = 0; i < 10000; ++i) {
        if (pred()) return true;
        ::usleep(1000);
    }
    return pred();
}

// A private anonymous mapping, unmapped on destruction (unless released).
class Mapping {
public:
    explicit Mapping(std::size_t len, int prot = PROT_READ | PROT_WRITE, int flags = MAP_PRIVATE | MAP_ANONYMOUS)
        : len_(len) {
        void* p = ::mmap(nullptr, len, prot, flags, -1, 0);
        base_ = p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
    }
    ~Mapping() { if (base_) ::munmap(base_, len_); }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;

    std::byte* data() const { return base_; }
    std::size_t size() const { return len_; }
    std::byte* page(std::size_t i) const { return base_ + i * kPage; }
    void forget() { base_ = nullptr; }   // the test unmapped or moved it itself

private:
    std::byte* base_ = nullptr;
    std::size_t len_;
};

// The byte at `addr` in the pattern: depends on the page and the offset, so a
// page copied to the wrong place or a torn copy shows.
inline std::uint8_t pattern_byte(std::uintptr_t addr) {
    const std::uintptr_t page = addr / kPage, off = addr % kPage;
    return static_cast<std::uint8_t>((page * 131u) ^ (off * 7u) ^ (off >> 8));
}

inline void fill_pattern(std::byte* dst, std::uintptr_t addr, std::size_t len) {
    for (std::size_t i = 0; i < len; ++i) dst[i] = std::byte{pattern_byte(addr + i)};
}

// Index of the first byte in [p, p+len) that differs from the pattern, or len.
inline std::size_t first_mismatch(const std::byte* p, std::size_t len) {
    const auto base = reinterpret_cast<std::uintptr_t>(p);
    for (std::size_t i = 0; i < len; ++i)
        if (p[i] != std::byte{pattern_byte(base + i)}) return i;
    return len;
}

// Serves missing faults with the pattern (or zero pages), WP faults by
// un-protecting. Every outcome other than done/exists is counted.
class PatternHandler : public uffd::Handler {
public:
    enum class Fill { pattern, zero };
    explicit PatternHandler(uffd::Uffd& u, Fill fill = Fill::pattern) : uffd_(u), fill_(fill) {
        removes.reserve(64);
        unmaps.reserve(64);
        remaps.reserve(64);
    }

    uffd::FaultDisposition on_fault(const uffd::PageFault& f) noexcept override {
        void* page = reinterpret_cast<void*>(f.address & ~(kPage - 1));
        uffd::Outcome out;
        if (f.wp) {
            wp_faults.fetch_add(1);
            out = uffd_.writeprotect(page, kPage, false);
        } else if (fill_ == Fill::zero) {
            missing_faults.fetch_add(1);
            out = uffd_.zeropage(page, kPage);
        } else {
            missing_faults.fetch_add(1);
            alignas(4096) static thread_local std::byte buf[kPage];
            fill_pattern(buf, reinterpret_cast<std::uintptr_t>(page), kPage);
            out = uffd_.copy(page, buf, kPage);
        }
        return settle(page, out);
    }
    void on_remove(const uffd::Remove& r) noexcept override { record(removes, r); }
    void on_unmap(const uffd::Unmap& u) noexcept override { record(unmaps, u); }
    void on_remap(const uffd::Remap& r) noexcept override { record(remaps, r); }
    // No heap allocation here: the forking thread holds malloc's locks
    // while it waits for this event to be read.
    void on_fork(uffd::Fork& f) noexcept override {
        forks.fetch_add(1);
        if (f.uffd.valid() && ::fcntl(f.uffd.get(), F_GETFD) >= 0) valid_fork_fds.fetch_add(1);
    }

    std::atomic<unsigned> missing_faults{0}, wp_faults{0}, exists{0}, retries{0}, vanished{0}, failures{0}, overflow{0};
    std::mutex lock;
    std::vector<uffd::Remove> removes;
    std::vector<uffd::Unmap> unmaps;
    std::vector<uffd::Remap> remaps;
    std::atomic<unsigned> forks{0}, valid_fork_fds{0};

protected:
    uffd::FaultDisposition settle(void* page, const uffd::Outcome& out) noexcept {
        switch (out.status) {
            case uffd::Status::done: return uffd::FaultDisposition::resolved;
            case uffd::Status::exists:
                // Someone resolved it first; make sure the faulting thread runs.
                exists.fetch_add(1);
                uffd_.wake(page, kPage);
                return uffd::FaultDisposition::resolved;
            case uffd::Status::retry:
                retries.fetch_add(1);
                return uffd::FaultDisposition::retry_later;
            case uffd::Status::vanished:
            case uffd::Status::gone:
                vanished.fetch_add(1);
                uffd_.wake(page, kPage);
                return uffd::FaultDisposition::resolved;
            default:
                failures.fetch_add(1);
                uffd_.wake(page, kPage);
                return uffd::FaultDisposition::resolved;
        }
    }

    // Events of madvise/munmap/mremap may be read while their caller holds
    // malloc's locks (glibc trims its heaps with madvise), so the record
    // vectors are reserved up front and never grow here.
    template <class T> void record(std::vector<T>& v, const T& e) {
        std::lock_guard l(lock);
        if (v.size() < v.capacity()) v.push_back(e);
        else overflow.fetch_add(1);
    }

    uffd::Uffd& uffd_;
    Fill fill_;
};

// A userfaultfd with every default feature, its range registered in MISSING
// mode, and a PatternHandler serving it through a running Monitor. Declare
// the Mapping before it: the monitor stops (and unregisters) first.
struct Served {
    uffd::Uffd u;
    PatternHandler h;
    uffd::Monitor mon;
    explicit Served(uffd::Uffd uf, unsigned threads = 1) : u(std::move(uf)), h(u), mon(u, h, {.threads = threads}) {}
    bool start() { return !mon.start(); }
};

inline uffd::Uffd open_or_die() {
    auto u = uffd::Uffd::open();
    if (!u) std::abort();   // the binary skips (77) before any case when uffd is unavailable
    return std::move(*u);
}

}  // namespace uhmm::test
