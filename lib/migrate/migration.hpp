// Migration: pages of a managed range to the device (migrate_vma's three
// phases) and home again (migrate_to_ram), through the userfaultfd, the arena
// and the copy engine.
//
// To the device, per batch of pages:
//   1. collect: under the block locks, pages not yet on the device become
//      MIGRATING and get a device page; then /proc/self/pagemap says which of
//      them hold data (a MIGRATING page cannot be populated behind our back:
//      its first-touch fault waits);
//   2. freeze: UFFDIO_WRITEPROTECT the present pages (reads go on, writes wait
//      in a WP fault), zero the device pages of absent ones (no copy);
//   3. copy: one CopyEngine batch; the next batch is collected and frozen
//      while it is in flight;
//   then, block by block under its lock, zap the copied host pages (UFFDIO_MOVE
//   into a scratch area, see host_zapper.hpp; MADV_DONTNEED claimed in
//   SelfZaps for pages MOVE refuses) and record DEVICE; then wake the waiting
//   writers, who fault MISSING and bring their page home. A page whose copy
//   failed is un-protected and stays on the host; a page the application
//   dropped meanwhile (kDiscarded) is not zapped and ends NONE, or HOST when
//   a fault refilled it (kRefilled).
//
// Home: UFFDIO_COPY straight from the arena's CPU mapping (one copy, contiguous
// device runs in one ioctl), then the device page's reference is dropped.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include <uhmm/copy_engine.hpp>
#include <uhmm/devmem.hpp>
#include <uhmm/migrate_result.hpp>
#include <uhmm/uffd.hpp>

#include "migrate/host_zapper.hpp"
#include "migrate/self_zaps.hpp"
#include "space/managed_range.hpp"

namespace uhmm::migrate {

struct MigrationCounters {
    std::atomic<std::uint64_t> pages_to_device{0}, bytes_to_device{0};
    std::atomic<std::uint64_t> pages_to_host{0}, bytes_to_host{0};
    std::atomic<std::uint64_t> pages_discarded{0};
    std::atomic<std::uint64_t> failed_pages{0};
    std::atomic<std::uint64_t> copy_batches{0};   // batches submitted to the copy engine
    std::atomic<std::uint64_t> replicas_made{0}, replicas_dropped{0};   // read-mostly replicas (replicas.cpp)
};

struct MigrationContext {
    uffd::Uffd& uffd;
    devmem::Arena& arena;
    devmem::OwnerId owner;
    CopyEngine& engine;
    int pagemap_fd;
    HostZapper* zapper;             // nullptr without UFFDIO_MOVE: every zap is MADV_DONTNEED
    SelfZaps& zaps;
    MigrationCounters& counters;
    std::size_t batch_pages;        // pages per collect/freeze/copy step
    // Returns once every userfaultfd event read so far has been handled: a
    // zap's Remove event must be handled while its SelfZaps claim still holds.
    std::function<void()> events_handled;
};

// What bringing pages home did.
struct HomeOutcome {
    std::size_t pages = 0;          // pages now on the host
    std::uint64_t bytes = 0;
    uffd::Status status = uffd::Status::done;   // done, retry (EAGAIN: try again), vanished, gone, failed
    int error = 0;
};

class Migration {
public:
    explicit Migration(MigrationContext ctx) noexcept : c_(ctx) {}

    // Pages [first, first + count) of `r` to the device / home. Not for the
    // fault thread: zaps wait for it, and a busy page is waited for.
    // `owner`: the runtime's id of the device that asked (0: none), kept in
    // each DEVICE page's entry.
    void to_device(space::ManagedRange& r, std::size_t first, std::size_t count, MigrateResult& out,
                   std::uint16_t owner = 0);
    void to_host(space::ManagedRange& r, std::size_t first, std::size_t count, MigrateResult& out);

    // With the block lock of [first, last) held (one block): copy its DEVICE
    // pages home. Fault-thread safe: no allocation, no waiting (for an arena
    // without a CPU mapping, the copy engine's staging is used, which may).
    // With `wake` false the caller wakes the range itself (after updating
    // what the woken thread may look at).
    HomeOutcome bring_home_locked(space::ManagedRange& r, std::size_t first, std::size_t last,
                                  bool wake = true) noexcept;

    // Drop the device page of a DEVICE page (the application discarded it),
    // or a HOST page's replica; block lock held.
    void discard_locked(space::PageEntry& e) noexcept;

    // Read-mostly replicas (replicas.cpp). replicate(): the HOST pages of
    // [first, first + count) advised read-mostly get a read-only copy in
    // device memory and stay on the host, write-protected, so that a CPU
    // write faults and drops the copy first. Pages with a replica already,
    // or on the device, or never touched (they read as zero everywhere)
    // count as already there. Not for the fault thread.
    void replicate(space::ManagedRange& r, std::size_t first, std::size_t count, MigrateResult& out);
    // Drop a HOST page's replica, if it has one; block lock held. The host
    // page keeps its write protection: the caller decides (a fault lifts it).
    // True when there was one.
    bool drop_replica_locked(space::PageEntry& e) noexcept;

    const MigrationContext& context() const noexcept { return c_; }

private:
    struct Batch;
    void collect(space::ManagedRange& r, std::size_t first, std::size_t count, Batch& b, MigrateResult& out);
    void freeze_and_submit(space::ManagedRange& r, Batch& b, MigrateResult& out);
    void finish(space::ManagedRange& r, Batch& b, MigrateResult& out);
    void zap_run_locked(space::ManagedRange& r, const Batch& b, std::size_t k, std::size_t e,
                        std::vector<std::size_t>& fallback) noexcept;
    std::size_t zap_by_madvise(space::ManagedRange& r, Batch& b, const std::vector<std::size_t>& pages);
    void record_locked(space::PageEntry& e, std::uint16_t owner) noexcept;
    void fail_page(space::ManagedRange& r, std::size_t page, std::error_code why, MigrateResult& out) noexcept;
    HomeOutcome copy_home(std::uintptr_t dst, devmem::PageIndex first_device, std::size_t pages, bool wake) noexcept;

    MigrationContext c_;
};

}  // namespace uhmm::migrate
