// uhmm::mirror::SoftDevice — a reference device, as the kernel's
// lib/test_hmm.c dmirror: it mirrors an interval of the process in a page
// table of its own and reads and writes only through that table.
//
// Host pages are reached by address with process_vm_readv/writev on this
// process (a concurrent munmap gives an error, never a crash), device pages
// it owns through the runtime's copy engine. An access to a page without an
// entry faults it in with range_fault (read_begin → range_fault → lock →
// read_retry, as a kernel driver does) and counts one fault per pass. The
// notifier callback drops entries. Two SoftDevices may mirror the same range:
// each owns the device pages it migrated and sees the other's as remote.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <system_error>
#include <vector>

#include <uhmm/mirror.hpp>
#include <uhmm/result.hpp>
#include <uhmm/runtime.hpp>

namespace uhmm::mirror {

// One byte per page from snapshot(), with test_hmm's values.
namespace snap {
inline constexpr std::uint8_t none = 0x00;            // no entry (not present, or not faulted)
inline constexpr std::uint8_t read = 0x01;            // readable
inline constexpr std::uint8_t write = 0x02;           // readable and writable
inline constexpr std::uint8_t pmd = 0x04;             // (with read/write) mapped by a 2 MiB huge page
inline constexpr std::uint8_t pud = 0x08;             // (with read/write) mapped by a 1 GiB huge page
inline constexpr std::uint8_t zero = 0x10;            // (with read) the shared zero page
inline constexpr std::uint8_t device_local = 0x20;    // (with read/write) a device page of this device
inline constexpr std::uint8_t device_remote = 0x30;   // (with read/write) a device page of another device
inline constexpr std::uint8_t error = 0xFF;           // not accessible
}  // namespace snap

// What an operation did, as dmirror's struct hmm_dmirror_cmd.
struct DeviceResult {
    std::size_t cpages = 0;   // pages read / written / migrated / reported
    std::size_t faults = 0;   // range_fault passes it took
};

class SoftDevice final : public Notifier {
public:
    // Mirror [addr, addr+len) (page-aligned) of memory `rt` may manage.
    static Result<std::unique_ptr<SoftDevice>> create(Runtime& rt, void* addr, std::size_t len);
    ~SoftDevice() override;   // drops its entries and its notifier

    // Read / write [addr, addr+len) through the device's table, faulting
    // entries in as needed. EFAULT / EPERM as range_fault says; EINVAL
    // outside the mirrored interval.
    Result<DeviceResult> read(const void* addr, std::size_t len, void* out);
    Result<DeviceResult> write(void* addr, std::size_t len, const void* in);
    // Move the pages to device memory at this device's request (their
    // entries then point at the device pages), or home. Memory the runtime
    // does not manage yet is handed to it first (manage()'s refusals: shared
    // memory is ENOENT, as migrate_vma says).
    Result<DeviceResult> migrate_to_device(void* addr, std::size_t len);
    Result<DeviceResult> migrate_to_host(void* addr, std::size_t len);
    // What the CPU page table and the runtime say now, without faulting.
    Result<DeviceResult> snapshot(const void* addr, std::size_t len, std::uint8_t* out);
    // Every device page this device owns in its interval comes home.
    Result<DeviceResult> release();
    // The next migration to this device (migrate_to_device() or
    // make_exclusive()) fails with ENOMEM, as if device memory ran out.
    void fail_next_allocation() noexcept;

    // Atomic access for the device, as dmirror's HMM_DMIRROR_EXCLUSIVE:
    // until the CPU touches a page again, only the device uses it, and a CPU
    // access revokes the device's access without losing data. cpages: the
    // pages the device now holds atomically; a page it could not take
    // (another device's, read-only, or one that failed to move) is not
    // counted. Errors: migrate_to_device()'s.
    //
    // How it differs from the kernel, and why: make_device_exclusive() keeps
    // the page in system memory and swaps the CPU's PTE for a device-exclusive
    // entry, so a CPU access faults. User space cannot put such an entry in
    // the CPU page table. What it can do is take the page away from the CPU,
    // so make_exclusive() migrates the pages to this device (the CPU PTE
    // goes, a CPU access takes a userfaultfd fault) and marks their entries
    // atomic. A CPU touch then brings the page home, and the runtime's
    // migrate invalidation makes the device drop the entry, atomic mark
    // included (the kernel sends MMU_NOTIFY_EXCLUSIVE). What a user sees is
    // the same: CPU access revokes device atomic access, the data is kept,
    // and the device's next access takes one fault. One thing is looser:
    // the runtime delivers fault-time invalidations from a thread of its
    // own, so the table hears of the revocation shortly after the CPU
    // access, not before it, and check_exclusive() may need a moment to say
    // true. The device never uses the stale page meanwhile: its copies are
    // checked against the runtime's page table (device_page_read/write with
    // an address say ESTALE) and it faults again.
    Result<DeviceResult> make_exclusive(void* addr, std::size_t len);
    // True when no page of [addr, addr+len) still has an atomic entry (as
    // HMM_DMIRROR_CHECK_EXCLUSIVE returning 0). Pages outside the mirrored
    // interval have no entries, so they count as not atomic.
    bool check_exclusive(const void* addr, std::size_t len) const;

    std::uint64_t invalidations() const noexcept;
    std::size_t entries() const;   // pages with a table entry now

    bool invalidate(const Invalidation& inv, std::uint64_t seq) noexcept override;
    // Advice accessed_by: refresh the entries of [start, end) ∩ the mirrored
    // interval from a snapshot (nothing faulted or moved; device pages of
    // any owner are mapped in place).
    std::error_code populate(std::uintptr_t start, std::uintptr_t end) noexcept override;

private:
    SoftDevice(Runtime& rt, std::uintptr_t start, std::size_t pages);
    std::error_code check(const void* addr, std::size_t len) const noexcept;
    // Refresh the entries of pages [first, last) with range_fault and
    // `request` (pfn::req_* bits; 0: a snapshot); counts the passes.
    std::error_code fault_in(std::size_t first, std::size_t last, std::uint64_t request, std::size_t& faults);
    void drop_locked(std::size_t page) noexcept;
    template <class CopyPage>
    Result<DeviceResult> access(const void* addr, std::size_t len, bool write, CopyPage copy_page);

    Runtime& rt_;
    std::uintptr_t base_;
    std::size_t pages_;
    mutable std::mutex lock_;
    // A pfn word per page (0: no entry), plus a bit of the device's own
    // for atomic entries (soft_device.cpp).
    std::vector<std::uint64_t> table_;
    std::atomic<std::uint64_t> invalidations_{0};
    std::atomic<bool> fail_alloc_{false};
};

}  // namespace uhmm::mirror
