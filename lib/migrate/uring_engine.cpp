// The io_uring copy engine.
//
// Host → device is an IORING_OP_WRITE from the (present, write-protected)
// host page into the arena file at the device page's offset; device → host is
// an IORING_OP_READ from the file into the caller's buffer. The arena fd is
// registered as fixed file 0 (no fget/fput per op). The engine's own staging
// buffers are registered as fixed buffers and used with READ_FIXED /
// WRITE_FIXED when an op's host range lies inside one; application memory is
// never registered (it may be unmapped at any moment, and pinning it would
// keep pages the application freed), and nothing is written into an
// application range except as a to_host destination the caller chose.
//
// Submission: submit() queues the batch's ops and, under one mutex (the SQ
// side of the ring), fills as many SQEs as the queue depth allows and makes
// one io_uring_submit for all of them. Ops beyond the depth wait in a FIFO and
// are submitted as earlier ones complete, so a batch of any size needs no more
// than `queue_depth` ring entries and the CQ (2 × depth) cannot overflow.
// With options.offload, SQEs carry IOSQE_ASYNC: the kernel hands the copy to
// its io-wq workers at once instead of first trying it inline in
// io_uring_enter, which keeps the copy's CPU time out of the submitting thread
// (the thread that migrates is often the one that must stay responsive).
//
// Completion: one thread per engine waits on the CQ, the only CQ consumer (so
// the CQ needs no lock). Why a thread rather than reaping in wait()/poll():
// callbacks must fire without anyone polling, and they must run in a known
// thread, not in whichever caller happened to reap (which could be the
// fault-resolving thread, which must never run foreign code). It costs one
// wake-up per batch (≈17 µs across CPUs here), small next to a batch's copy.
// The completion thread resubmits short transfers and -EAGAIN/-EINTR results
// (it needs the SQ mutex for that, which submitters hold only briefly), and
// completes fences after dropping that mutex, so callbacks may submit.
//
// Hugetlb arenas: the kernel refuses every write path into hugetlbfs (write,
// pwrite, io_uring WRITE, splice from a pipe: EINVAL; measured on 6.18).
// Measured ways in, 2 MiB blocks into a populated hugetlb mapping: memcpy
// ≈20 GB/s (4 KiB scattered ≈12); process_vm_writev to our own pid ≈13-14;
// io_uring WRITE to /proc/self/mem at the mapping's address ≈4 (the kernel
// copies page by page through a bounce page); UFFDIO_COPY needs a
// registered, missing destination and is the migration layer's tool, not a
// copy engine's. Host → device for hugetlb is therefore a CPU copy into the
// runtime-private arena mapping on a CpuWorker thread, done with
// process_vm_writev (batched, ≈13 GB/s at 2 MiB) rather than memcpy, because
// the host side is application memory that may be unmapped under us, and
// EFAULT is an answer where a SIGSEGV is not (see cpu_worker.cpp). Device →
// host from hugetlb stays an io_uring READ, which works there (≈12-15 GB/s).
//
// Host → device for a shmem arena goes the same way, by guarded memcpy
// (guarded_copy.hpp), whenever the process lets us catch its faults: on the
// machines measured that is 2-2.5x io_uring WRITE (bench_runtime_migrate,
// memfd vs memfd+memcpy), and the worker keeps the copy asynchronous, so
// it overlaps the next batch's freeze and the last one's zap. Where guarded
// copies are not available, io_uring WRITE stays the path (its EFAULT is
// free; process_vm_writev is no faster here).
//
// options.cpu_worker sends every op down that CPU path, for any file arena.
// On the machine uhmm was measured on (2-vCPU VM), io_uring's kernel copy
// into and out of a shmem file runs at 0.25-0.5x memcpy for 2 MiB ops
// (writes to one inode serialise on its i_rwsem and on io-wq's per-inode
// hashing; every 4 KiB folio is looked up, locked and dirtied; reads go
// ≈6 GB/s per worker) and ≈0.1x for scattered 4 KiB ops (≈4 µs of kernel CPU
// per op, mostly io-wq hand-off), while the CPU worker does 4 KiB pages 3-4x
// faster. The benchmark reports both, so the choice can be made per machine.
#include "migrate/uring_engine.hpp"

#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "base/internal_thread.hpp"
#include "base/log.hpp"
#include "migrate/cpu_worker.hpp"
#include "migrate/fence_state.hpp"
#include "migrate/guarded_copy.hpp"
#include "base/private_fds.hpp"

namespace uhmm::migrate::detail {

namespace {

constexpr std::uint64_t kStop = ~std::uint64_t{0};        // user_data of the NOP that ends the completion thread
constexpr std::uint64_t kIgnore = ~std::uint64_t{0} - 1;  // an SQE neutralised after a failed submit
constexpr int kArenaFile = 0;                             // fixed-file index of the arena fd

bool retryable(int err) { return err == EAGAIN || err == EINTR; }

// Ops adjacent in a batch whose host ranges and arena ranges both follow on
// (a contiguous run of pages going to contiguous device pages) travel as one
// SQE of at most this many bytes: per-op cost dominates 4 KiB copies here
// (≈4 µs of CPU each, measured), and a migration of a range mostly looks like
// that. The cap keeps large reads spread over io-wq workers.
constexpr std::uint32_t kMaxRun = devmem::kChunkSize;

// One SQE's worth of work, in flight or waiting for a ring slot: ops
// [index, index + lens.size()) of a fence (a single op when lens is empty),
// `done` bytes of `len` already moved.
struct Req {
    std::shared_ptr<FenceState> fence;
    std::size_t index = 0;
    Direction dir = Direction::to_device;
    std::byte* host = nullptr;
    std::uint64_t offset = 0;
    std::uint32_t len = 0;
    std::uint32_t done = 0;
    std::vector<std::uint32_t> lens;   // per-op lengths of a coalesced run

    std::size_t count() const { return lens.empty() ? 1 : lens.size(); }
    std::uint32_t op_len(std::size_t k) const { return lens.empty() ? len : lens[k]; }

    // Append `op` (batch index i) when it continues this run.
    bool absorb(const std::shared_ptr<FenceState>& f, std::size_t i, const CopyOp& op) {
        if (fence != f || index + count() != i || len + std::uint64_t{op.len} > kMaxRun) return false;
        if (static_cast<std::byte*>(op.host) != host + len || op.arena_offset != offset + len) return false;
        if (lens.empty()) lens.push_back(len);
        lens.push_back(op.len);
        len += op.len;
        return true;
    }
};

// An op's outcome, applied to its fence once the engine's mutex is dropped.
struct Outcome {
    std::shared_ptr<FenceState> fence;
    std::size_t index;
    std::uint32_t bytes;
    std::error_code error;
};

class UringEngine final : public EngineBase {
public:
    UringEngine(const devmem::ArenaView& view, const EngineOptions& options) : EngineBase(view) {
        offload_ = options.offload;
        cpu_all_ = options.cpu_worker;
    }

    // Ring, fixed file, staging and threads; unwinds through the destructor's
    // members on failure.
    std::error_code init(const EngineOptions& options);
    ~UringEngine() override;

    EngineKind kind() const noexcept override { return EngineKind::uring; }
    std::string_view name() const noexcept override { return "io_uring"; }
    Fence submit(Direction dir, std::span<const CopyOp> ops) override;

private:
    void prep(io_uring_sqe* sqe, const Req& r, std::uint32_t slot);
    void pump(std::vector<Outcome>& failed);                  // under mu_
    void fail_unsubmitted(int err, std::vector<Outcome>& failed);   // under mu_
    void complete_loop();
    int wait_cqe(io_uring_cqe** cqe);
    void finish(std::uint64_t user_data, int res, std::vector<Outcome>& out);   // under mu_
    void settle(Req&& r, std::error_code error, bool retry_alone, std::vector<Outcome>& out);   // under mu_
    bool idle() const { return pending_.empty() && free_.size() == slots_.size(); }

    io_uring ring_{};
    bool ring_ready_ = false;
    bool offload_ = true;
    bool cpu_all_ = false;             // every op goes to cpu_ (options.cpu_worker)
    bool fixed_buffers_ = false;
    AnonRegion region_;
    // The CPU path: hugetlb writes, guarded host → arena copies, or all ops
    // (cpu_all_). Made on first use: most runtimes never migrate.
    CpuWorker& cpu();
    std::once_flag cpu_once_;
    std::unique_ptr<CpuWorker> cpu_;

    std::mutex mu_;                    // the SQ side: pending_, slots_, free_, broken_
    std::condition_variable idle_cv_;
    std::deque<Req> pending_;
    std::vector<Req> slots_;           // indexed by user_data
    std::vector<std::uint32_t> free_;
    std::error_code broken_;           // set when the ring refused a submit for good
    std::atomic<bool> stop_{false};    // the destructor's fallback when the stop NOP cannot be sent
    std::thread completer_;
};

std::error_code UringEngine::init(const EngineOptions& options) {
    if (int rc = io_uring_queue_init(options.queue_depth, &ring_, 0); rc < 0) return errno_code(-rc);
    ring_ready_ = true;
    // The ring's descriptor goes where the program will not see it (the
    // ring's mappings hold the file; liburing only needs the number).
    ring_.ring_fd = ring_.enter_ring_fd = base::hide_fd(ring_.ring_fd);
    if (int rc = io_uring_register_files(&ring_, &view_.fd, 1); rc < 0) return errno_code(-rc);

    auto region = AnonRegion::create(options.staging_slots * options.staging_slot_bytes);
    if (!region) return region.error();
    region_ = std::move(*region);
    staging_.reset(region_.bytes(), options.staging_slot_bytes, options.staging_slots);
    if (options.staging_slots > 0) {
        std::vector<iovec> iov(options.staging_slots);
        for (std::size_t i = 0; i < iov.size(); ++i)
            iov[i] = {region_.bytes().data() + i * options.staging_slot_bytes, options.staging_slot_bytes};
        const int rc = io_uring_register_buffers(&ring_, iov.data(), static_cast<unsigned>(iov.size()));
        // Without them (RLIMIT_MEMLOCK for an unprivileged process) staging
        // still works through plain READ/WRITE, a page-table walk per op slower.
        fixed_buffers_ = rc == 0;
        if (rc < 0)
            uhmm::log::get().info("io_uring copy engine: staging buffers not registered ({}); using plain READ/WRITE",
                                  std::strerror(-rc));
    }

    slots_.resize(options.queue_depth);
    for (std::size_t i = slots_.size(); i-- > 0;) free_.push_back(static_cast<std::uint32_t>(i));
    completer_ = base::start_internal_thread("uhmm-copy-cq", [this] { complete_loop(); });
    return {};
}

UringEngine::~UringEngine() {
    cpu_.reset();   // finishes its queued batches
    if (completer_.joinable()) {
        std::unique_lock lk(mu_);
        idle_cv_.wait(lk, [&] { return idle(); });
        // Every op has completed: the only SQE left to submit is the stop NOP.
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, kStop);
        int rc;
        do rc = io_uring_submit(&ring_);
        while (rc < 0 && retryable(-rc));
        // If the ring is dead the NOP never comes back; the completion thread
        // then sees stop_ at its next timed wake-up.
        stop_.store(true, std::memory_order_release);
        lk.unlock();
        (void)rc;
        completer_.join();
    }
    if (ring_ready_) {
        base::forget_fd(ring_.ring_fd);
        io_uring_queue_exit(&ring_);
    }
}

void UringEngine::prep(io_uring_sqe* sqe, const Req& r, std::uint32_t slot) {
    std::byte* host = r.host + r.done;
    const std::uint32_t n = r.len - r.done;
    const std::uint64_t off = r.offset + r.done;
    const auto buf = fixed_buffers_ ? staging_.slot_of(host, n) : std::nullopt;
    if (r.dir == Direction::to_device) {
        if (buf) io_uring_prep_write_fixed(sqe, kArenaFile, host, n, off, static_cast<int>(*buf));
        else io_uring_prep_write(sqe, kArenaFile, host, n, off);
    } else {
        if (buf) io_uring_prep_read_fixed(sqe, kArenaFile, host, n, off, static_cast<int>(*buf));
        else io_uring_prep_read(sqe, kArenaFile, host, n, off);
    }
    sqe->flags |= IOSQE_FIXED_FILE | (offload_ ? IOSQE_ASYNC : 0);
    io_uring_sqe_set_data64(sqe, slot);
}

// Fill free ring slots from the FIFO, then submit them all in one call
// (retrying the call on EAGAIN/EINTR/EBUSY, which leave the SQEs in the ring).
void UringEngine::pump(std::vector<Outcome>& failed) {
    if (broken_) {
        for (auto& r : pending_) settle(std::move(r), broken_, false, failed);
        pending_.clear();
        return;
    }
    unsigned prepared = 0;
    while (!pending_.empty() && !free_.empty()) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) break;   // cannot happen: in flight ≤ depth = SQ entries
        const std::uint32_t slot = free_.back();
        free_.pop_back();
        slots_[slot] = std::move(pending_.front());
        pending_.pop_front();
        prep(sqe, slots_[slot], slot);
        ++prepared;
    }
    if (prepared == 0) return;
    int stalls = 0;
    while (io_uring_sq_ready(&ring_) > 0) {
        const int rc = io_uring_submit(&ring_);
        if (rc > 0) continue;
        const int err = rc < 0 ? -rc : EAGAIN;   // 0 submitted: treat as "try again"
        if (err == EINTR) continue;
        if ((err == EAGAIN || err == EBUSY) && ++stalls < 10000) {
            sched_yield();
            continue;
        }
        fail_unsubmitted(err, failed);
        return;
    }
}

// The ring refused SQEs for good: turn the unconsumed ones into ignored NOPs
// (so that a later enter cannot run them against reused slots), fail their
// ops and every queued one, and refuse all future batches with the error.
void UringEngine::fail_unsubmitted(int err, std::vector<Outcome>& failed) {
    broken_ = errno_code(err);
    uhmm::log::get().error("io_uring copy engine: io_uring_submit failed: {}; failing the engine", std::strerror(err));
    const unsigned head = *ring_.sq.khead;
    for (unsigned i = head; i != ring_.sq.sqe_tail; ++i) {
        io_uring_sqe* sqe = &ring_.sq.sqes[i & ring_.sq.ring_mask];
        const std::uint64_t ud = sqe->user_data;
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, kIgnore);
        settle(std::move(slots_[ud]), broken_, false, failed);
        free_.push_back(static_cast<std::uint32_t>(ud));
    }
    for (auto& r : pending_) settle(std::move(r), broken_, false, failed);
    pending_.clear();
}

CpuWorker& UringEngine::cpu() {
    std::call_once(cpu_once_, [&] { cpu_ = std::make_unique<CpuWorker>(view_.base, region_.bytes()); });
    return *cpu_;
}

Fence UringEngine::submit(Direction dir, std::span<const CopyOp> ops) {
    auto fence = make_fence_state(ops.size());
    std::vector<CpuWorker::Item> cpu_items;
    std::vector<Outcome> failed;
    const bool by_cpu = cpu_all_ || (dir == Direction::to_device &&
                                     (view_.kind == devmem::ArenaKind::hugetlb || guarded_copy_ready()));
    {
        std::unique_lock lk(mu_, std::defer_lock);
        if (!by_cpu) lk.lock();
        for (std::size_t i = 0; i < ops.size(); ++i) {
            const CopyOp& op = ops[i];
            if (auto ec = check(op)) {
                failed.push_back({fence, i, 0, ec});
            } else if (by_cpu) {
                cpu_items.push_back({i, op});
            } else if (pending_.empty() || !pending_.back().absorb(fence, i, op)) {
                pending_.push_back(Req{fence, i, dir, static_cast<std::byte*>(op.host), op.arena_offset, op.len, 0, {}});
            }
        }
        if (!by_cpu) pump(failed);
    }
    if (!cpu_items.empty()) cpu().enqueue(fence, dir, std::move(cpu_items));
    for (auto& f : failed) f.fence->complete(f.index, f.bytes, f.error);
    return Fence(std::move(fence));
}

// One CQE: done, short (resubmit the rest), retryable, or failed.
void UringEngine::finish(std::uint64_t user_data, int res, std::vector<Outcome>& out) {
    if (user_data == kIgnore) return;
    const auto slot = static_cast<std::uint32_t>(user_data);
    Req r = std::move(slots_[slot]);
    free_.push_back(slot);
    if (res < 0 && retryable(-res)) {
        pending_.push_front(std::move(r));
        return;
    }
    if (res < 0) return settle(std::move(r), errno_code(-res), true, out);
    if (res == 0) return settle(std::move(r), errno_code(ENXIO), true, out);   // the file ended first
    r.done += static_cast<std::uint32_t>(res);
    if (r.done < r.len) {
        pending_.push_front(std::move(r));   // short transfer: the remainder goes first
        return;
    }
    settle(std::move(r), {}, false, out);
}

// Give each op of a finished request its outcome. Ops wholly moved succeed.
// On an error, a coalesced run is split: with `retry_alone`, the ops not yet
// done go back to the front of the queue one by one (the op that failed with
// its partial progress), so that each gets its own verdict from the kernel
// rather than its neighbour's; otherwise (a dead ring) they all take `error`.
void UringEngine::settle(Req&& r, std::error_code error, bool retry_alone, std::vector<Outcome>& out) {
    std::uint64_t start = 0;
    std::size_t k = 0;
    for (; k < r.count() && start + r.op_len(k) <= r.done; start += r.op_len(k), ++k)
        out.push_back({r.fence, r.index + k, r.op_len(k), {}});
    if (k == r.count()) return;
    if (r.count() == 1 || !retry_alone) {
        for (; k < r.count(); start += r.op_len(k), ++k) {
            const auto partial = static_cast<std::uint32_t>(r.done > start ? r.done - start : 0);
            out.push_back({r.fence, r.index + k, partial, error});
        }
        return;
    }
    std::vector<Req> alone;
    for (std::uint64_t at = start; k < r.count(); at += r.op_len(k), ++k) {
        const auto partial = static_cast<std::uint32_t>(r.done > at ? r.done - at : 0);
        alone.push_back(Req{r.fence, r.index + k, r.dir, r.host + at, r.offset + at, r.op_len(k), partial, {}});
    }
    for (auto it = alone.rbegin(); it != alone.rend(); ++it) pending_.push_front(std::move(*it));
}

// Wait for a CQE; with a timeout where the kernel takes it as an argument
// (IORING_FEAT_EXT_ARG, 5.11), since otherwise liburing would queue a timeout
// SQE from this thread, racing the submitters on the SQ.
int UringEngine::wait_cqe(io_uring_cqe** cqe) {
    if (!(ring_.features & IORING_FEAT_EXT_ARG)) return io_uring_wait_cqe(&ring_, cqe);
    __kernel_timespec ts{.tv_sec = 1, .tv_nsec = 0};
    return io_uring_wait_cqe_timeout(&ring_, cqe, &ts);
}

void UringEngine::complete_loop() {
    std::vector<std::pair<std::uint64_t, int>> cqes;
    std::vector<Outcome> out;
    for (;;) {
        io_uring_cqe* cqe = nullptr;
        const int rc = wait_cqe(&cqe);
        if (rc < 0) {
            if (rc == -ETIME) {
                if (stop_.load(std::memory_order_acquire)) return;
                continue;
            }
            if (retryable(-rc)) continue;
            uhmm::log::get().error("io_uring copy engine: waiting for completions failed: {}", std::strerror(-rc));
            return;
        }
        cqes.clear();
        unsigned head = 0;
        unsigned n = 0;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            cqes.emplace_back(cqe->user_data, cqe->res);
            ++n;
        }
        io_uring_cq_advance(&ring_, n);

        bool stop = false;
        out.clear();
        {
            std::lock_guard lk(mu_);
            for (auto [ud, res] : cqes) {
                if (ud == kStop) stop = true;
                else finish(ud, res, out);
            }
            pump(out);
            if (idle()) idle_cv_.notify_all();
        }
        for (auto& o : out) o.fence->complete(o.index, o.bytes, o.error);
        if (stop) return;
    }
}

}  // namespace

Result<std::unique_ptr<CopyEngine>> make_uring_engine(const devmem::ArenaView& view,
                                                      const EngineOptions& options) {
    if (view.fd < 0 || view.base == nullptr || view.kind == devmem::ArenaKind::numa ||
        view.kind == devmem::ArenaKind::cuda)
        return std::errc::not_supported;
    auto engine = std::make_unique<UringEngine>(view, options);
    if (auto ec = engine->init(options)) return ec;
    return std::unique_ptr<CopyEngine>(std::move(engine));
}

}  // namespace uhmm::migrate::detail
