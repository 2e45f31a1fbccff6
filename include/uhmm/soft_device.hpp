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
    // The next migrate_to_device() fails as if device memory ran out.
    void fail_next_allocation() noexcept;

    std::uint64_t invalidations() const noexcept;
    std::size_t entries() const;   // pages with a table entry now

    bool invalidate(const Invalidation& inv, std::uint64_t seq) noexcept override;

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
    std::vector<std::uint64_t> table_;   // a pfn word per page; 0: no entry
    std::atomic<std::uint64_t> invalidations_{0};
    std::atomic<bool> fail_alloc_{false};
};

}  // namespace uhmm::mirror
