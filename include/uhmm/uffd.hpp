// uhmm::uffd — userfaultfd done right: open, register, resolve, events, monitor.
//
// The lowest layer of uhmm. Everything that catches a fault (missing pages,
// write-protected pages) or hears about the address space changing (madvise,
// munmap, mremap, fork) comes through here. Resolve ioctls report expected
// outcomes as values (Status), not failures: EEXIST means "already resolved",
// EAGAIN means "the address space is changing: read the pending events, then
// retry", ENOENT means "the range went away", ESRCH/ENOSPC "the process is gone".
// See libuhmm(3) for the protocol in prose.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <variant>
#include <vector>

#include <uhmm/fd.hpp>
#include <uhmm/result.hpp>

namespace uhmm::uffd {

// ---- features -------------------------------------------------------------

// UFFD_FEATURE_* bits (values as in the kernel's uapi, including those newer
// than Debian's 6.1 headers).
namespace feature {
inline constexpr std::uint64_t pagefault_flag_wp    = 1u << 0;   // WP mode on anonymous memory
inline constexpr std::uint64_t event_fork           = 1u << 1;
inline constexpr std::uint64_t event_remap          = 1u << 2;
inline constexpr std::uint64_t event_remove         = 1u << 3;
inline constexpr std::uint64_t missing_hugetlbfs    = 1u << 4;
inline constexpr std::uint64_t missing_shmem        = 1u << 5;
inline constexpr std::uint64_t event_unmap          = 1u << 6;
inline constexpr std::uint64_t sigbus               = 1u << 7;
inline constexpr std::uint64_t thread_id            = 1u << 8;
inline constexpr std::uint64_t minor_hugetlbfs      = 1u << 9;
inline constexpr std::uint64_t minor_shmem          = 1u << 10;
inline constexpr std::uint64_t exact_address        = 1u << 11;
inline constexpr std::uint64_t wp_hugetlbfs_shmem   = 1u << 12;
inline constexpr std::uint64_t wp_unpopulated       = 1u << 13;  // 6.4
inline constexpr std::uint64_t poison               = 1u << 14;  // 6.6
inline constexpr std::uint64_t wp_async             = 1u << 15;  // 6.7
inline constexpr std::uint64_t move                 = 1u << 16;  // 6.8

// What uhmm asks for by default: every event, thread ids, WP, and the newer
// resolve ioctls. Never SIGBUS mode (faults must reach the monitor) and never
// WP_ASYNC (it changes what a WP fault means; the tier policy opens its own).
inline constexpr std::uint64_t uhmm_default =
    pagefault_flag_wp | event_fork | event_remap | event_remove | event_unmap |
    missing_hugetlbfs | missing_shmem | thread_id | wp_hugetlbfs_shmem |
    wp_unpopulated | poison | move;
}  // namespace feature

// A readable list of feature bits ("event_fork, thread_id, ...").
std::string feature_names(std::uint64_t features);

// ---- probing ----------------------------------------------------------------

// How a userfaultfd was (or could not be) obtained.
enum class OpenPath : std::uint8_t { syscall, dev_userfaultfd, none };

// What this kernel and this process allow; computed once per process.
struct Probe {
    bool available = false;
    OpenPath path = OpenPath::none;
    std::uint64_t features = 0;   // every feature the kernel offers
    std::uint64_t ioctls = 0;     // UFFDIO_API's ioctl bits
    std::error_code error;        // why not, when !available
    std::string reason;           // one line: why not, and what fixes it
};

// The process-wide probe (cached after the first call; thread-safe).
const Probe& probe();

// ---- register modes and resolve results ------------------------------------

enum Mode : std::uint32_t {
    missing = 1u << 0,            // UFFDIO_REGISTER_MODE_MISSING
    wp = 1u << 1,                 // UFFDIO_REGISTER_MODE_WP
};

// The outcome of a resolve ioctl (COPY, ZEROPAGE, WRITEPROTECT, WAKE, MOVE,
// POISON). Expected outcomes are statuses; only `failed` is an error.
enum class Status : std::uint8_t {
    done,        // every byte resolved
    partial,     // `bytes` resolved, the rest not yet: continue from there
    exists,      // EEXIST: a page is already there (someone resolved it first)
    retry,       // EAGAIN with nothing done: the mm is changing; read events, retry
    vanished,    // ENOENT: the range is no longer registered (unmapped/remapped)
    gone,        // ESRCH/ENOSPC: the process or its mm is gone
    failed,      // anything else: `error` says what
};

struct Outcome {
    Status status = Status::done;
    std::size_t bytes = 0;        // bytes resolved (COPY, ZEROPAGE, MOVE, POISON)
    int error = 0;                // errno, 0 when done

    bool ok() const noexcept { return status == Status::done; }
};

const char* to_string(Status s) noexcept;

// ---- typed events -------------------------------------------------------------

struct PageFault {
    std::uintptr_t address;       // page-aligned unless exact_address was negotiated
    bool write;                   // the access was a write
    bool wp;                      // a write to a write-protected page
    bool minor;                   // a minor fault (page cache present)
    pid_t tid;                    // faulting thread, 0 without thread_id
};
struct Remove { std::uintptr_t start, end; };       // madvise DONTNEED/REMOVE/FREE
struct Unmap { std::uintptr_t start, end; };        // munmap, or mremap shrinking
struct Remap { std::uintptr_t from, to; std::size_t len; };  // mremap moved pages
struct Fork { Fd uffd; };                           // the child's userfaultfd (owned)

using Event = std::variant<PageFault, Remove, Unmap, Remap, Fork>;

// ---- the userfaultfd itself ---------------------------------------------------

struct OpenOptions {
    std::uint64_t wanted = feature::uhmm_default;   // negotiated when the kernel has them
    std::uint64_t required = 0;                     // open fails (ENOTSUP) without these
};

// A registered userfaultfd. Move-only; closing it wakes every thread parked in
// one of its faults and unregisters its ranges (in this process; a forked
// child that still holds the file keeps it alive — use unregister_all()).
class Uffd {
public:
    // Open (syscall, else /dev/userfaultfd) and negotiate features. Never
    // UFFD_USER_MODE_ONLY: kernel-mode faults (read(2) into a managed page)
    // must be served. Errors: EPERM with probe().reason, ENOSYS, ENOTSUP.
    static Result<Uffd> open(const OpenOptions& options = {});

    // Adopt an already negotiated userfaultfd (a Fork event's child fd).
    static Uffd adopt(Fd fd, std::uint64_t features);

    Uffd(Uffd&&) noexcept;
    Uffd& operator=(Uffd&&) noexcept;
    ~Uffd();

    int fd() const noexcept { return fd_.get(); }
    std::uint64_t features() const noexcept { return features_; }
    bool has(std::uint64_t f) const noexcept { return (features_ & f) == f; }

    // Register [addr, addr+len) (page-aligned) in `modes`; returns the
    // UFFDIO_* ioctl bits the kernel allows on it. EINVAL for unaligned or
    // unsupported mappings, EBUSY when another userfaultfd owns part of it.
    Result<std::uint64_t> register_range(void* addr, std::size_t len, std::uint32_t modes);
    std::error_code unregister_range(void* addr, std::size_t len);
    // Unregister every mapping this object registered, wherever it is now
    // (moved by mremap, grown in place): wakes every parked fault. After it,
    // munmap/madvise of those ranges no longer wait for an event reader.
    void unregister_all() noexcept;
    // A registered range moved (the monitor calls this for Remap events).
    // Reader-thread safe: never allocates, never blocks on an allocating lock.
    void note_remap(const Remap& remap) noexcept;

    // Resolve ioctls. `wake` false = DONTWAKE (wake later, many at once).
    Outcome copy(void* dst, const void* src, std::size_t len, bool wake = true, bool write_protect = false) noexcept;
    Outcome zeropage(void* dst, std::size_t len, bool wake = true) noexcept;
    Outcome writeprotect(void* addr, std::size_t len, bool protect, bool wake = true) noexcept;
    Outcome wake(void* addr, std::size_t len) noexcept;
    Outcome move(void* dst, void* src, std::size_t len, bool wake = true, bool allow_src_holes = false) noexcept;
    Outcome poison(void* dst, std::size_t len, bool wake = true) noexcept;

    // Read up to `max` events without blocking (fd is O_NONBLOCK); empty when
    // none is pending. EAGAIN is not an error here.
    Result<std::vector<Event>> read_events(std::size_t max = 64);

private:
    Uffd(Fd fd, std::uint64_t features) noexcept;

    Fd fd_;
    std::uint64_t features_ = 0;
    struct Registration { std::uintptr_t start; std::size_t len; };
    // Registrations made through this object (application threads only).
    std::unique_ptr<std::mutex> reg_lock_;   // heap-held so that Uffd stays movable
    std::vector<Registration> registered_;
    // Where registered ranges moved to, noted by the reader thread into a
    // fixed buffer (no allocation on that thread); unregister_all() reads it.
    struct Moves;
    std::unique_ptr<Moves> moves_;
};

// Decode one raw message (struct uffd_msg, 32 bytes). Unknown types → nullopt-
// like: returns false and leaves `out` untouched.
bool decode(const void* msg, Event& out) noexcept;

// ---- the monitor ----------------------------------------------------------------

// What a handler did with a fault.
enum class FaultDisposition : std::uint8_t {
    resolved,      // resolved, or moot (vanished/gone): forget it
    retry_later,   // a resolve ioctl said retry (EAGAIN): park it, read events, re-drive
};

// Receives every message of a monitored userfaultfd, on a monitor thread.
// Every method must not throw, must not touch memory registered with the
// userfaultfd, must not take a lock that an application thread can hold while
// it faults (it would deadlock with its own fault), and must not allocate from
// the heap: the thread behind an event may hold malloc's locks while it waits
// for the event to be read (fork() does; glibc trims heaps with madvise).
// A fault whose resolve reports `vanished` or `gone` must still be woken
// (Uffd::wake): a thread parked on a range that went away sleeps otherwise.
class Handler {
public:
    virtual ~Handler() = default;
    virtual FaultDisposition on_fault(const PageFault& fault) noexcept = 0;
    virtual void on_remove(const Remove&) noexcept {}
    virtual void on_unmap(const Unmap&) noexcept {}
    virtual void on_remap(const Remap&) noexcept {}
    // The child's userfaultfd is handed over in `fork.uffd`; a handler that
    // leaves it there lets the monitor close it, which unregisters the child's
    // ranges (the child then sees ordinary anonymous memory).
    virtual void on_fork(Fork&) noexcept {}
};

struct MonitorOptions {
    unsigned threads = 1;             // reader threads
    // Where reader i runs: pinned to cpus[i] when given (one per reader),
    // else wherever the scheduler puts it. A reader kept on each CPU serves a
    // fault on the CPU that took it: the faulting thread has just slept there,
    // so the reader runs without a cross-CPU wake-up, and so does the faulting
    // thread when its page is in (see lib/runtime/reader_placement.cpp).
    std::vector<int> cpus{};
    unsigned batch = 64;              // messages per read(2)
    unsigned retry_interval_us = 200; // re-drive cadence while faults are parked
};

struct MonitorStats {
    std::uint64_t reads = 0;          // read(2) calls that returned messages
    std::uint64_t messages = 0;
    std::uint64_t faults = 0;         // page-fault messages
    std::uint64_t events = 0;         // non-fault messages
    std::uint64_t deferred = 0;       // faults parked after retry_later
    std::uint64_t redriven = 0;       // re-drive attempts of parked faults
};

// N reader threads serving one userfaultfd. Each read drains the pending
// messages in a batch, hands the non-fault events to the handler first (a
// resolve fails with EAGAIN until they are read), then the faults. Faults that
// must be retried are parked and re-driven after the next reads, never retried
// in a blocking loop. Reader threads block every signal. Across readers, a
// fault is handled only after every event read before it has been handled
// (an event's caller may touch the memory as soon as its event is read).
class Monitor {
public:
    Monitor(Uffd& uffd, Handler& handler, MonitorOptions options = {});
    ~Monitor();   // stop()
    Monitor(const Monitor&) = delete;
    Monitor& operator=(const Monitor&) = delete;

    std::error_code start();
    // Stop and join the readers. With `release_parked`, unregister the uffd's
    // ranges so that every thread parked in a fault is woken (its access then
    // completes as ordinary memory). Idempotent.
    void stop(bool release_parked = true) noexcept;
    bool running() const noexcept { return running_.load(std::memory_order_acquire); }

    MonitorStats stats() const noexcept;
    unsigned threads() const noexcept { return options_.threads; }
    bool pinned() const noexcept { return !options_.cpus.empty(); }

    // Wait until every event read so far has been handled. An event's caller
    // (madvise, munmap, mremap) returns once its event is read, before the
    // handler has run; a caller that needs the handler's work done first (the
    // runtime, after its own zap) calls this next. Never from a reader thread.
    void wait_events_handled() noexcept;

private:
    void reader_loop(unsigned index, std::latch& ready) noexcept;
    // Handle a batch once `after` event batches are handled; `ticket` is the
    // batch's own number when it holds events (0 otherwise).
    void dispatch(std::vector<Event>& events, std::uint64_t after, std::uint64_t ticket) noexcept;
    void wait_for_events_handled(std::uint64_t batches) noexcept;
    void redrive_parked(std::vector<PageFault>& scratch) noexcept;

    Uffd& uffd_;
    Handler& handler_;
    MonitorOptions options_;
    Fd stop_fd_;                        // eventfd: wakes every reader on stop()
    std::vector<std::thread> readers_;
    std::atomic<bool> running_{false};
    std::atomic<bool> stopping_{false};

    std::mutex read_lock_;              // readers only: serialises read(2) and numbering
    std::uint64_t event_batches_read_ = 0;               // under read_lock_
    std::atomic<std::uint64_t> event_batches_handled_{0};
    std::mutex parked_lock_;            // readers only, never an application thread
    std::vector<PageFault> parked_;
    std::atomic<std::size_t> parked_count_{0};

    struct Counters {
        std::atomic<std::uint64_t> reads{0}, messages{0}, faults{0}, events{0}, deferred{0}, redriven{0};
    } counters_;
};

}  // namespace uhmm::uffd
