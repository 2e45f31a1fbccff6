// uhmm::Runtime — managed ranges, page states, migration to the device and
// back on a CPU fault.
//
// The runtime ties the layers together: one userfaultfd (MISSING + WP modes)
// with its monitor, one device-memory arena, one copy engine, and the managed
// ranges with a state per 4 KiB page:
//
//   NONE (never touched) → HOST (in RAM) → MIGRATING (write-protected, copy in
//   flight: CPU reads go on, CPU writes wait) → DEVICE (in the arena, the CPU
//   page zapped) → HOST again on a CPU touch (migrate_to_ram) or on request.
//
// The application keeps using its memory with plain loads and stores; the
// runtime serves the faults. madvise(DONTNEED/FREE/REMOVE), munmap, mremap
// and fork keep their meaning (see libuhmm(3) and docs/ARCHITECTURE.md).
//
// Errors are values: std::error_code (generic category for errno values) and,
// where a sentence helps, `*why` gets one line saying what was refused and why.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <uhmm/advice.hpp>
#include <uhmm/copy_engine.hpp>
#include <uhmm/devmem.hpp>
#include <uhmm/heap.hpp>
#include <uhmm/migrate_result.hpp>
#include <uhmm/mirror.hpp>
#include <uhmm/page_state.hpp>
#include <uhmm/prefetch.hpp>
#include <uhmm/result.hpp>

namespace uhmm {

// ---- configuration ------------------------------------------------------------

// One configuration key (the same keys UHMM_CONF uses), for docs and --help.
struct Knob {
    std::string_view name;
    std::string_view default_value;
    std::string_view unit;        // "bytes", "threads", "" (a word), ...
    std::string_view doc;
};

// Every key the runtime accepts, in the order the README lists them.
std::span<const Knob> knobs();

// policy=: what moves pages when nobody asks (see docs/ARCHITECTURE.md).
enum class PolicyKind : std::uint8_t {
    none,    // pages move only when asked (migrate(), hmmctl)
    chaos,   // every chaos_period_ms, a seeded random chaos_fraction of host pages go to the device
    tier,    // host-resident managed memory kept within tier_hot: the coldest pages go to the device
};
std::string_view to_string(PolicyKind k) noexcept;

struct PolicyConfig {
    PolicyKind kind = PolicyKind::none;   // policy=
    unsigned chaos_period_ms = 100;       // chaos_period_ms=
    double chaos_fraction = 0.1;          // chaos_fraction= (0 < f <= 1)
    std::uint64_t seed = 1;               // seed=
    std::size_t tier_hot = 256u << 20;    // tier_hot= (bytes of managed memory allowed on the host)
};

// A policy and its knobs as `hmmctl policy` gives them: "tier,tier_hot=64M"
// (or "policy=tier,..."); knobs not given keep `base`'s values. EINVAL for a
// key that is not one of the policy's (policy, chaos_period_ms,
// chaos_fraction, seed, tier_hot) or a bad value; `*why` says which.
Result<PolicyConfig> parse_policy_spec(std::string_view spec, const PolicyConfig& base, std::string* why = nullptr);

struct RuntimeConfig {
    // The default arena, built by assignment: a designated initializer here
    // made GCC 12 at -O3 see ArenaSpec's string member as maybe-uninitialized
    // in every copy of a RuntimeConfig.
    static devmem::ArenaSpec default_arena() {
        devmem::ArenaSpec spec;
        spec.backend = devmem::Backend::memfd;
        spec.size = std::size_t{1} << 30;
        return spec;
    }

    // arena=, arena_size=, arena_reserve=. memfd by default: it needs no
    // setup and takes nothing that other software reserved (huge pages are
    // the user's to give: arena=hugepage).
    devmem::ArenaSpec arena = default_arena();
    migrate::EngineKind engine = migrate::EngineKind::automatic;   // engine=
    // fault_threads=: uffd reader threads; 0 is auto, one kept on each CPU the
    // process may run on (at most 8), so that a fault is served on the CPU
    // that took it, with no cross-CPU wake-up. Not the default yet: faster
    // for scattered touches (0.85x the raw round trip against 1.2x), but
    // several readers made some policy=tier runs several times slower.
    unsigned fault_threads = 1;
    // fault_around=: the most a CPU fault brings back at once (device pages of
    // the same aligned block, or zero-filled never-touched pages). The window
    // doubles while faults walk the range in order, up or down (four walks
    // at once), as the kernel's readahead does. A random touch of a device
    // page brings one page; one of a never-touched page zero-fills 64 KiB
    // (at most fault_around), since a fault costs more than the zeros.
    std::size_t fault_around = 2u << 20;
    // migrate_batch=: pages write-protected, copied and zapped per step of a
    // migration to the device (a step's copy overlaps the next step's setup).
    std::size_t migrate_batch = 4u << 20;
    PolicyConfig policy;
    // The preload library's keys (libuhmm_preload.so; the runtime itself
    // only logs and writes statistics): min_range= (allocations and private
    // anonymous mappings this big or bigger become managed), socket= (the
    // control socket, hmmctl), log= (off, error, warn, info, debug), stats=
    // (a path: JSON statistics at exit; %p becomes the process id).
    std::size_t min_range = 1u << 20;
    bool socket = true;
    std::string log = "warn";
    std::string stats;

    // The defaults with `text` ("key=value,key=value") applied. Unknown keys
    // and bad values: EINVAL, `*why` names the key and what is accepted.
    static Result<RuntimeConfig> parse(std::string_view text, std::string* why = nullptr);
    // The configuration as the keys spell it (parse(to_string()) round-trips).
    std::string to_string() const;
};

// ---- ranges and statistics ------------------------------------------------------

struct RangeInfo {
    std::uintptr_t start = 0;
    std::size_t len = 0;
    bool owned = false;           // allocate()d by the runtime (release() unmaps it)
    std::size_t pages[4] = {};    // pages per PageState
};

struct RuntimeStats {
    std::uint64_t ranges = 0, managed_bytes = 0;
    std::uint64_t faults = 0;                // fault messages served
    std::uint64_t faults_missing = 0, faults_wp = 0;   // of which: missing pages, write-protected
    std::uint64_t fault_p50_ns = 0, fault_p99_ns = 0;  // time the fault thread spent on one (within 19%)
    std::uint64_t copy_batches = 0;          // batches the migrations submitted to the copy engine
    std::uint64_t first_touch_faults = 0;    // faults on never-touched pages
    std::uint64_t device_faults = 0;         // faults that brought device pages home
    std::uint64_t write_waits = 0;           // writes that waited for a migration in flight
    std::uint64_t watched_writes = 0;        // first writes to pages under watch_writes()
    std::uint64_t pages_zero_filled = 0;     // never-touched pages given zeros
    std::uint64_t pages_to_device = 0;
    std::uint64_t pages_to_host = 0;         // by faults and by request
    std::uint64_t pages_to_host_on_fault = 0;
    std::uint64_t pages_discarded = 0;       // device pages dropped by the application (DONTNEED, munmap)
    std::uint64_t migrate_failed_pages = 0;
    std::uint64_t bytes_to_device = 0, bytes_to_host = 0;
    std::uint64_t device_pages = 0;          // device pages held now
    std::uint64_t migrations_would_block = 0;   // non-blockable migrations given up (EAGAIN)
    std::uint64_t ranges_managed = 0;           // ranges managed over the runtime's life
    std::uint64_t policy_rounds = 0;            // the policy's rounds
    std::uint64_t policy_migrations = 0;        // the policy's migrate calls that moved pages
    std::uint64_t prefetches = 0;               // prefetch() and prefetch_async() requests finished
    std::uint64_t replicas = 0;                 // read-mostly pages with a device replica now
    std::uint64_t replicas_made = 0;            // replicas made over the runtime's life
    std::uint64_t replica_invalidations = 0;    // replicas dropped by a CPU write
    // range_fault's view of the mappings: lookups, those the cache served,
    // and the kernel queries (PROCMAP_QUERY, or the maps text) made.
    std::uint64_t view_lookups = 0, view_cache_hits = 0, view_kernel_queries = 0;
    devmem::ArenaStats arena;
    std::size_t metadata_bytes = 0;          // page tables, locks and range headers
};

// ---- the runtime -------------------------------------------------------------------

class Runtime {
public:
    // Open the userfaultfd, build the arena and the copy engine, start the
    // fault threads. Errors: EPERM/ENOSYS (no userfaultfd: `*why` is the
    // probe's one line), ENOTSUP (the kernel lacks anonymous WP faults or the
    // REMOVE/UNMAP/REMAP events: Linux 5.7+), the arena's and engine's errors
    // in their own categories (a CUDA engine's message is CUDA's), errnos of
    // opening /proc/self/pagemap, mmap and starting the fault threads.
    static Result<std::unique_ptr<Runtime>> create(const RuntimeConfig& config = {},
                                                   std::string* why = nullptr);
    // Brings every device page home, then stops. A page that cannot come
    // home (a copy error) is logged and lost: there is no one left to tell.
    ~Runtime();
    Runtime(const Runtime&) = delete;
    Runtime& operator=(const Runtime&) = delete;

    // Hand existing private anonymous memory to the runtime (page-aligned,
    // wholly mapped). Refused: shared mappings (ENOENT, as hmm_range_fault
    // does), file-backed or hugetlb mappings (EINVAL), unaligned or zero
    // lengths (EINVAL), unmapped addresses (EFAULT), overlap with a managed
    // range (EEXIST), a mapping a userfaultfd owns (EBUSY; also the part of a
    // managed mapping that mremap grew). ENOMEM: no memory for the tables.
    // Every mutating call returns ECHILD in a fork()ed child (see fork).
    std::error_code manage(void* addr, std::size_t len, std::string* why = nullptr);
    // Give a whole managed range back (its device pages come home first).
    // ENOENT when [addr, addr+len) is not exactly one managed range (len is
    // compared as given); EIO (or the copy's error) when some device pages
    // could not come home: the range then stays managed, nothing lost.
    std::error_code unmanage(void* addr, std::size_t len);

    // manage() for memory the caller has just mapped itself, private and
    // anonymous (a hook's fresh mmap, or the part of a managed mapping that
    // mremap grew): no /proc/self/smaps check, so it costs no more than the
    // registration. Memory another userfaultfd owns is still EBUSY.
    std::error_code manage_fresh(void* addr, std::size_t len);

    // Map len bytes (rounded up to pages) of private anonymous memory and manage it.
    Result<void*> allocate(std::size_t len);
    // The same, aligned to `alignment` (a power of two, at least 4096; EINVAL otherwise).
    Result<void*> allocate(std::size_t len, std::size_t alignment);
    // Unmanage and unmap memory from allocate() (device pages are just freed;
    // len is rounded up to pages). ENOENT: not exactly one managed range at
    // addr of that length; EINVAL: a range from manage() (use unmanage).
    std::error_code release(void* addr, std::size_t len);
    // The runtime's heap (include/uhmm/heap.hpp), made on first use: objects
    // of any size packed into managed memory, for uhmm::allocator and
    // uhmm::memory_resource. It goes first when the runtime does.
    Heap& heap();

    // Move [addr, addr+len) to the device or home. The range must be page-
    // aligned and lie in managed ranges (EINVAL / EFAULT otherwise, nothing
    // done). Per-page outcomes are in the result; the call's own error only
    // says it could not start.
    // Mirrors overlapping the range get a migrate invalidation first, with
    // `owner` (the device asking, or nullptr) so that one can skip its own;
    // so do not call it holding a lock your notifier's callback takes.
    Result<MigrateResult> migrate(void* addr, std::size_t len, Target to, const void* owner = nullptr);
    // The same, with the caller's circumstances. blockable = false (a
    // background policy, which must not wait on a device): the mirrors'
    // invalidation may be answered "would block"; the runtime then backs off
    // and asks again a few times within about a millisecond, and gives up:
    // nothing moved, every page failed, error EAGAIN.
    struct MigrateOptions {
        const void* owner = nullptr;
        bool blockable = true;
    };
    Result<MigrateResult> migrate(void* addr, std::size_t len, Target to, const MigrateOptions& options);

    // ---- prefetch and advice (cudaMemPrefetchAsync, cudaMemAdvise; advice.hpp) ----

    // Move the pages holding [addr, addr+len) to `to` now, as
    // cudaMemPrefetchAsync does: any bytes, rounded out to whole pages (so
    // a small object's neighbours on its pages move too). To the host:
    // device pages come home and never-touched pages are filled with zeros,
    // so the CPU then takes no fault there. To the device: pages go to
    // device memory for `device` (the owner range_fault reports them to:
    // the device about to use them, or nullptr); never-touched pages stay
    // so (they read as zero anyway); read-mostly pages stay on the host and
    // get a replica instead. Errors before anything moves: EINVAL (zero or
    // overflowing len), EFAULT (a page not managed), ECHILD (fork()ed child).
    Result<MigrateResult> prefetch(const void* addr, std::size_t len, Target to, const void* device = nullptr);
    // The same, queued for the runtime's prefetch thread (prefetch.hpp):
    // the arguments are checked now (the same errors), the pages move later,
    // in order with the other prefetches queued.
    Result<PrefetchFence> prefetch_async(const void* addr, std::size_t len, Target to, const void* device = nullptr);
    // A fence for every prefetch queued so far (ready at once when none is).
    PrefetchFence prefetch_fence();

    // Advice for the pages holding [addr, addr+len) (rounded out to pages),
    // as cudaMemAdvise (advice.hpp says what each does). Errors, with `*why`
    // saying which: EINVAL (zero or overflowing len, an advice or location
    // that is not one of the enumerators, accessed_by without a device or
    // with a device not inserted in notifiers() over the whole range,
    // read_mostly together with preferred_location = device), EFAULT (a
    // page not managed), ECHILD (fork()ed child). Nothing changes on error.
    std::error_code advise(const void* addr, std::size_t len, Advice advice, AdviceTarget target = {},
                           std::string* why = nullptr);
    // What advice each page of [addr, addr+len) has now: advice_bits, one
    // byte per page. EFAULT: a page is not managed; EINVAL: `out` too short.
    std::error_code advice(const void* addr, std::size_t len, std::span<std::uint8_t> out) const;

    // mprotect(2) that keeps mirrors in step: the protection changes, then
    // every notifier overlapping the range gets a blockable `protection`
    // invalidation (mprotect itself sends no userfaultfd event). Any memory,
    // managed or not; len is rounded up to pages. mprotect's errors; EINVAL
    // for an unaligned address or zero length. The preload library's
    // mprotect hook calls it.
    std::error_code protect(void* addr, std::size_t len, int prot);
    // Whether every mprotect of managed memory goes through protect() from
    // now on (the preload library's hook sees to it; a program may promise
    // it too). Then range_fault serves the permissions of managed memory from
    // a cache that protect(), munmap, mremap and manage keep true, instead
    // of asking the kernel on every call. Off by default: a plain mprotect
    // is always seen.
    void protection_hooked(bool every_mprotect_reported) noexcept;

    // The devices' notifiers (include/uhmm/mirror.hpp). The runtime tells
    // them: unmap (munmap, mremap away), clear (madvise DONTNEED/FREE/REMOVE),
    // migrate (migrate(), and pages a CPU fault brought home), fork (before
    // fork()), release (the runtime's end, before pages come home). Those the
    // fault thread sees are delivered from a thread of the runtime's own,
    // in order, shortly after; the others from the calling thread.
    mirror::NotifierRegistry& notifiers() noexcept;

    // Device code's access to device pages (range_fault reports them with
    // pfn::device and the page index): hold a reference while you map one
    // (the page is not reused until you drop it, even after it came home),
    // and copy in and out through the copy engine. EINVAL: not a page in
    // use, or a span outside the page.
    std::error_code device_page_get(std::uint64_t page);
    // The same, checked against the page table: takes the reference only if
    // `addr` is still on the device in that very page (under the page
    // table's lock, so the page cannot be freed and reused in between).
    // ESTALE when it moved since the caller's range_fault.
    std::error_code device_page_hold(const void* addr, std::uint64_t page);
    std::error_code device_page_put(std::uint64_t page);
    std::error_code device_page_read(std::uint64_t page, std::size_t offset, void* dst, std::size_t len);
    std::error_code device_page_write(std::uint64_t page, std::size_t offset, const void* src, std::size_t len);
    // The same for the device page behind `addr`, and what device code
    // should use: the copy runs under the page table's lock, only while
    // `addr` still has that very page; ESTALE when it moved since the
    // caller's range_fault (fault it again). A CPU fault brings a page home
    // at once but its invalidation reaches the mirrors a moment later, from
    // the runtime's thread; a copy by index in that moment would read stale
    // data or write to a copy no one will read again.
    std::error_code device_page_read(const void* addr, std::uint64_t page, std::size_t offset, void* dst,
                                     std::size_t len);
    std::error_code device_page_write(const void* addr, std::uint64_t page, std::size_t offset, const void* src,
                                      std::size_t len);

    // Where each page of [addr, addr+len) is now (one entry per page).
    // EFAULT when a page is not managed, EINVAL when `out` is too short.
    std::error_code residency(const void* addr, std::size_t len, std::span<PageState> out) const;
    Result<PageState> state(const void* addr) const;
    // Whether any page of [addr, addr+len) is managed (lock-light: the hooks ask it).
    bool manages(const void* addr, std::size_t len) const;

    // Which host-resident pages the program writes, seen through the
    // runtime's own write protection (for policies: this kernel build has
    // neither soft-dirty nor idle-page bits, and UFFD_FEATURE_WP_ASYNC would
    // apply to the whole userfaultfd, freezes of migrations included).
    // watch_writes() write-protects the HOST pages of [addr, addr+len) not
    // watched yet and returns how many it did; the first write to each then
    // costs one fault, which notes it and lets it through (the watch ends
    // there). take_writes() sets written[i] to whether page i was written
    // since it was watched, and clears the note. A page that moves or is
    // dropped loses its watch and its note. EFAULT: a page is not managed;
    // EINVAL: `written` too short. Nothing happens in a fork()ed child.
    Result<std::size_t> watch_writes(const void* addr, std::size_t len);
    std::error_code take_writes(const void* addr, std::size_t len, std::span<std::uint8_t> written);

    // One round of the placement policy now, from the calling thread (its
    // own thread runs one per period; rounds never overlap). The pages it
    // moved; 0 for policy=none.
    std::size_t policy_round();
    // Replace the placement policy (hmmctl policy): the new one starts at
    // once, the old one's thread stops after its round. Its rounds and
    // migrations stay counted. ECHILD in a fork()ed child.
    std::error_code set_policy(const PolicyConfig& config);
    // The policy now (config() keeps the one the runtime was created with).
    PolicyConfig policy() const;

    std::vector<RangeInfo> ranges() const;
    RuntimeStats stats() const;
    // stats() as one JSON object (the keys of `hmmctl stat --json` and of
    // the preload library's stats= file): pid, faults, device_faults,
    // pages_to_device, pages_to_host, migrations (policy migrations that
    // moved pages), bytes, arena use, policy, ...
    std::string stats_json() const;
    const RuntimeConfig& config() const noexcept;
    // uhmm's version ("0.1.0"): the library this runtime comes from.
    static std::string_view version() noexcept;
    // One line: arena (and fallbacks), engine, fault threads, fault_around,
    // userfaultfd features.
    std::string describe() const;

    struct Impl;

private:
    friend std::error_code mirror::range_fault(Runtime& rt, mirror::Range& range);
    explicit Runtime(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace uhmm
