// uhmm::devmem — device-memory arenas and the device-page allocator.
//
// An Arena stands in for a device's memory, the way a ZONE_DEVICE dev_pagemap
// does in the kernel: the application never maps it (device-private pages),
// only the runtime and its copy engine reach it, through view(). Memory comes
// from a backend chosen by a spec string (UHMM_CONF arena=...): `hugepage`
// (MFD_HUGETLB memfd, falling back to a THP-advised or plain memfd and saying
// why), `memfd` (shmem), `numa:N` (anonymous memory bound to node N: CXL/HBM,
// device-coherent) or `cuda:N` (cudaMalloc, when built with CUDA).
//
// The arena reserves arena_size bytes of address space up front, so view().base
// never moves, and maps + populates 2 MiB chunks into it as it grows. Chunks
// are carved into 4 KiB device pages: page N lives at byte offset N * kPageSize.
// Each page has a refcount, an owner (dev_private_owner) and, through its
// owner, a page_free callback that runs once when the last reference goes.
//
// Errors are values: std::error_code in the uhmm.devmem category (Errc below,
// each equivalent to a std::errc), or the errno of the failing system call.
// Where a one-line explanation helps (a bad spec, a refused backend), the
// functions that can fail that way take an optional `std::string* why`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include <uhmm/arena_view.hpp>
#include <uhmm/result.hpp>

namespace uhmm::devmem {

inline constexpr std::size_t kPagesPerChunk = kChunkSize / kPageSize;   // 512

// ---- errors -----------------------------------------------------------------

enum class Errc : int {
    arena_full = 1,          // every page is in use and the arena is at arena_size (≈ ENOMEM)
    page_not_allocated,      // get/put/owner of a free page: a refcount bug (≈ EINVAL)
    bad_page,                // page index beyond the arena's capacity (≈ EINVAL)
    bad_owner,               // unknown OwnerId, null or already registered token (≈ EINVAL)
    owner_table_full,        // kMaxOwners owners registered (≈ ENOSPC)
    refcount_overflow,       // get() on a page with 2^32 - 1 references (≈ EOVERFLOW)
    pool_empty,              // a hugepage arena cannot grow: the kernel's huge page pool has none free (≈ ENOMEM)
};
const std::error_category& devmem_category() noexcept;
std::error_code make_error_code(Errc e) noexcept;

// ---- what to build ------------------------------------------------------------

enum class Backend : std::uint8_t { hugepage, memfd, numa, cuda };

struct ArenaSpec {
    Backend backend = Backend::memfd;
    int index = 0;                          // numa: the node; cuda: the device
    std::size_t size = 64u << 20;           // arena_size: the limit, a multiple of kChunkSize
    std::size_t initial = kChunkSize;       // mapped and populated at creation (≤ size)
    bool reserve = false;                   // hugepage: may reserve huge pages as root
    // The 2 MiB hugetlb pool's sysfs directory (tests point it at a fake one).
    std::string hugetlb_pool = "/sys/kernel/mm/hugepages/hugepages-2048kB";
};

// Parse UHMM_CONF's arena=, arena_size= and arena_reserve= values. arena:
// hugepage | memfd | numa:NODE | cuda:DEVICE; size: bytes with an optional
// K/M/G/T suffix (binary), rounded up to whole chunks. On error `*why` gets one
// line naming the key and the accepted values; the code is EINVAL.
Result<ArenaSpec> parse_arena_spec(std::string_view arena, std::string_view size, bool reserve,
                                   std::string* why = nullptr);
// "512M" → 536870912; EINVAL for anything else (no suffix = bytes).
Result<std::size_t> parse_size(std::string_view text);
// 536870912 → "512M": the largest binary suffix that divides it exactly.
std::string format_size(std::size_t bytes);
// The spec as the keys would spell it: "arena=numa:0,arena_size=64M,arena_reserve=off".
std::string to_string(const ArenaSpec& spec);
const char* to_string(Backend b) noexcept;

// ---- owners -------------------------------------------------------------------

using PageIndex = std::uint32_t;           // device page N is at byte offset N * kPageSize

// A registered owner (one per device that allocates from the arena).
struct OwnerId {
    std::uint16_t value = 0;                // 0: none (a free page)
    friend bool operator==(OwnerId, OwnerId) = default;
};
inline constexpr std::size_t kMaxOwners = 256;

// Called once when a page's last reference is dropped, before the page can be
// allocated again (dev_pagemap_ops.page_free). Runs in the thread that called
// the final put(), with no arena lock held: it may alloc() and put() other
// pages, but must not get() this one, and must not throw (put is noexcept).
using PageFreeFn = std::function<void(PageIndex page, const void* owner_token)>;

// ---- statistics -----------------------------------------------------------------

struct ArenaStats {
    std::size_t limit_pages = 0;            // arena_size / kPageSize
    std::size_t capacity_pages = 0;         // mapped so far (chunks * kPagesPerChunk)
    std::size_t used_pages = 0;             // allocated now
    std::size_t high_water_pages = 0;       // most ever allocated at once
    std::size_t alloc_failures = 0;         // alloc/alloc_run calls that returned an error
    std::size_t chunks = 0;                 // 2 MiB chunks mapped
    std::size_t runs_contiguous = 0;        // alloc_run calls served as one contiguous run
    std::size_t runs_scattered = 0;         // alloc_run calls that fell back to several pieces
};

// ---- the arena -------------------------------------------------------------------

// Thread-safe: every member may be called from any thread. The allocation
// fast path takes one per-shard lock (shards picked per thread), never a
// global one; growth (mapping a chunk) serialises on a growth lock, off the
// fast path. Destroying the arena with pages still allocated logs a warning
// and does not run their page_free callbacks (the owners may be gone).
class Arena {
public:
    // Build the backend, reserve arena_size of address space, map and populate
    // spec.initial. Errors: EINVAL (bad spec), ENODEV (numa node / GPU absent,
    // CUDA not built in), ENOMEM, or the failing call's errno; `*why` says
    // which and why in one line.
    static Result<std::unique_ptr<Arena>> create(const ArenaSpec& spec, std::string* why = nullptr);
    ~Arena();
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;

    ArenaView view() const;                 // base/fd fixed for life; size grows
    const ArenaSpec& spec() const noexcept;
    std::string describe() const;           // the backend really in use, and why (fallbacks)
    ArenaStats stats() const;
    // Runtime-private CPU address of a page; nullptr for cuda or beyond capacity.
    std::byte* address(PageIndex page) const noexcept;

    // Map and populate chunks now until at least `bytes` are usable (≤ size).
    std::error_code grow(std::size_t bytes);

    // Register an owner token (a device's dev_private_owner) with its callback.
    Result<OwnerId> add_owner(const void* token, PageFreeFn page_free = {});
    const void* owner_token(OwnerId id) const noexcept;   // nullptr for none/unknown

    // One page with refcount 1, growing the arena by a chunk when needed.
    // Errc::arena_full at the limit, or the growth error (ENOMEM, ...).
    Result<PageIndex> alloc(OwnerId owner);
    // n pages into out[0..n), all or nothing, as few contiguous runs as the
    // free space allows (best effort: it falls back to scattered pages rather
    // than fail). Returns the number of contiguous runs written (1 = one run).
    Result<std::size_t> alloc_run(std::size_t n, OwnerId owner, std::span<PageIndex> out);

    // Take / drop a reference. get() refuses a free page (get_page_unless_zero);
    // the put() that drops the count to 0 runs the owner's page_free, then frees.
    std::error_code get(PageIndex page) noexcept;
    std::error_code put(PageIndex page) noexcept;
    std::uint32_t refcount(PageIndex page) const noexcept;   // 0: free or out of range
    const void* owner(PageIndex page) const noexcept;        // token; nullptr when free
    OwnerId owner_id(PageIndex page) const noexcept;

    struct Impl;

private:
    explicit Arena(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace uhmm::devmem

namespace std {
template <>
struct is_error_code_enum<uhmm::devmem::Errc> : true_type {};
}  // namespace std
