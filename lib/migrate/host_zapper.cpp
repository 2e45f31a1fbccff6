// HostZapper (see the header for why MOVE and not DONTNEED).
#include "migrate/host_zapper.hpp"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <thread>

#include "space/proc_maps.hpp"
#include "base/private_fds.hpp"

namespace uhmm::migrate {

namespace {
constexpr std::size_t kPage = 4096;

std::unique_ptr<HostZapper> refuse(std::string* why, std::string text) {
    if (why) *why = std::move(text);
    return nullptr;
}
}  // namespace

std::unique_ptr<HostZapper> HostZapper::create(std::string* why) {
    if (!(uffd::probe().features & uffd::feature::move))
        return refuse(why, "this kernel has no UFFDIO_MOVE (Linux 6.8+)");
    // MOVE only: no events, no WP, nothing that could ever make a reader
    // necessary on this fd.
    auto u = uffd::Uffd::open({.wanted = uffd::feature::move, .required = uffd::feature::move});
    if (!u) return refuse(why, "second userfaultfd: " + u.error().message());
    const std::size_t len = kSlots * kSlotBytes;
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return refuse(why, "scratch mapping: " + std::generic_category().message(errno));
    // Small pages only (MOVE of a small page into a huge-page-backed
    // destination splits it), and never into a child.
    (void)::madvise(p, len, MADV_NOHUGEPAGE);
    (void)::madvise(p, len, MADV_DONTFORK);
    if (auto reg = u->register_range(p, len, uffd::missing); !reg) {
        ::munmap(p, len);
        return refuse(why, "scratch registration: " + reg.error().message());
    }
    Fd pagemap(base::hide_fd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)));
    if (!pagemap) {
        ::munmap(p, len);
        return refuse(why, "/proc/self/pagemap: " + std::generic_category().message(errno));
    }
    return std::unique_ptr<HostZapper>(new HostZapper(std::move(*u), std::move(pagemap), static_cast<std::byte*>(p)));
}

HostZapper::~HostZapper() { ::munmap(scratch_, kSlots * kSlotBytes); }

std::byte* HostZapper::acquire() noexcept {
    for (;;) {
        for (std::size_t i = 0; i < kSlots; ++i) {
            bool free = false;
            if (busy_[i].compare_exchange_strong(free, true, std::memory_order_acquire)) return scratch_ + i * kSlotBytes;
        }
        // Every slot in use: each holder is inside one MOVE and one DONTNEED
        // and waits for nobody, so one is free shortly.
        std::this_thread::yield();
    }
}

void HostZapper::release(std::byte* slot) noexcept {
    busy_[static_cast<std::size_t>(slot - scratch_) / kSlotBytes].store(false, std::memory_order_release);
}

namespace {
void mark(std::uint64_t* bits, std::size_t i) noexcept {
    if (bits) bits[i / 64] |= std::uint64_t{1} << (i % 64);
}
}  // namespace

HostZapper::Outcome HostZapper::zap(std::uintptr_t addr, std::size_t len, std::uint64_t* absent) noexcept {
    // Only the pages pagemap shows present or swapped are moved, without
    // ALLOW_SRC_HOLES: a MOVE over holes whose page table the application's
    // own DONTNEED is freeing at that moment (CONFIG_PT_RECLAIM) was seen to
    // spin in the kernel for good on 6.18. A page that vanishes between the
    // look and the move answers ENOENT and is skipped: it is gone, as wanted.
    Outcome out;
    std::byte* slot = acquire();
    std::uint64_t pm[kSlotBytes / kPage];
    while (out.bytes < len && !out.error) {
        const std::uintptr_t chunk = addr + out.bytes;
        const std::size_t pages = std::min(len - out.bytes, kSlotBytes) / kPage;
        if (auto ec = space::read_pagemap(pagemap_.get(), chunk, pages, pm)) {
            out.error = ec.value();
            break;
        }
        std::size_t i = 0;
        while (i < pages && !out.error) {
            if (!(pm[i] & (space::kPagemapPresent | space::kPagemapSwapped))) {
                mark(absent, out.bytes / kPage + i);
                ++i;
                continue;
            }
            std::size_t j = i + 1;
            while (j < pages && (pm[j] & (space::kPagemapPresent | space::kPagemapSwapped))) ++j;
            i = move_run(slot, chunk + i * kPage, j - i, out.error, absent, out.bytes / kPage + i) + i;
            if (!out.error) i = std::max(i, j);
        }
        out.bytes += (out.error ? i : pages) * kPage;
    }
    release(slot);
    return out;
}

std::size_t HostZapper::move_run(std::byte* slot, std::uintptr_t at, std::size_t pages, int& error,
                                 std::uint64_t* absent, std::size_t first_bit) noexcept {
    // Returns how many pages of the run are gone; `error` says why the next
    // one is not (0 when all are).
    std::size_t done = 0, step = pages;
    int again = 0;
    bool cleared = false;
    while (done < pages) {
        const std::size_t n = std::min(step, pages - done);
        const auto o = uffd_.move(slot, reinterpret_cast<void*>(at + done * kPage), n * kPage, false, false);
        const std::size_t moved = (o.ok() ? n * kPage : o.bytes) / kPage;
        if (moved) (void)::madvise(slot, moved * kPage, MADV_DONTNEED);
        done += moved;
        if (o.ok()) {
            step = pages;
            continue;
        }
        if (moved) continue;   // stopped part way: the next call says why
        switch (o.status) {
            case uffd::Status::vanished:
                mark(absent, first_bit + done);
                ++done;   // zapped meanwhile (or its mapping went): gone all the same
                continue;
            case uffd::Status::retry:
                if (++again < 64) {
                    std::this_thread::yield();   // a page table or folio changing under it
                    continue;
                }
                break;
            case uffd::Status::exists:
                if (!cleared) {
                    // The scratch still had something (seen once on a
                    // never-touched destination): clear it, try once more.
                    (void)::madvise(slot, kSlotBytes, MADV_DONTNEED);
                    cleared = true;
                    continue;
                }
                break;
            default:
                // A run across two VMAs (MOVE wants one source VMA): halve
                // the step until it fits.
                if (o.error == EINVAL && n > 1) {
                    step = n / 2;
                    continue;
                }
                break;
        }
        error = o.error ? o.error : EIO;
        return done;
    }
    return done;
}

}  // namespace uhmm::migrate
