// CpuWorker: one thread, a FIFO of batches, copies through the arena mapping.
//
// One thread because the copy is memory-bound and the machines this runs on
// have few cores; what it buys is not bandwidth but an asynchronous fence and
// a submitting thread that does not spend its own CPU time on the copy.
//
// Host memory belongs to the application and may be unmapped under us; a
// plain memcpy from a vanished page would kill the process, where io_uring
// would have answered EFAULT. So the worker reaches host memory by guarded
// memcpy (guarded_copy.hpp: a fault in the copy is caught and is EFAULT)
// wherever the process leaves SIGSEGV/SIGBUS to us, and otherwise with
// process_vm_readv / process_vm_writev on its own pid: the kernel does the
// copy (on our own mm, no permission check) and reports a bad address as a
// short count. Up to kIovMax ops go in one call, so the syscall cost is paid
// per batch, not per page. An op at the point where a call stopped short is
// redone alone to get its own verdict. Where those calls are refused
// (seccomp), the worker falls back to memcpy and says so once. Ops on the
// engine's own staging memory, which cannot vanish, use memcpy.
//
// The price of that safety, measured here (2-vCPU VM, 6.18): 2 MiB ops
// ≈10.5 GB/s into a shmem arena and ≈13 GB/s into a hugetlb one, against
// ≈17-18.5 GB/s for memcpy on the same worker; scattered 4 KiB ops ≈6.5
// against ≈11.5 GB/s. Still 3-4x io_uring READ/WRITE for 4 KiB pages.
#include "migrate/cpu_worker.hpp"

#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>

#include "base/internal_thread.hpp"
#include "base/log.hpp"
#include "migrate/guarded_copy.hpp"
#include "migrate/memcpy_engine.hpp"

namespace uhmm::migrate::detail {

namespace {

constexpr std::size_t kIovMax = 512;   // ≤ IOV_MAX (1024)

// Host ↔ arena for `n` ops through our own pid; bytes moved, or -errno when
// nothing moved. Host memory is the "local" side, which the kernel reaches
// with copy_{from,to}_user (a bad address ends the copy with a short count);
// the arena is the "remote" side, which it pins (cheap for 2 MiB hugetlb
// folios, and the arena is never unmapped under us).
long vm_copy(Direction dir, const iovec* arena, const iovec* host, std::size_t n) {
    const pid_t self = ::getpid();
    for (;;) {
        const ssize_t rc = dir == Direction::to_device
                               ? ::process_vm_writev(self, host, n, arena, n, 0)   // host → arena
                               : ::process_vm_readv(self, host, n, arena, n, 0);   // arena → host
        if (rc >= 0) return rc;
        if (errno == EINTR) continue;
        return -errno;
    }
}

bool vm_copy_works() {
    char src = 1, dst = 0;
    iovec a{&dst, 1}, h{&src, 1};
    if (vm_copy(Direction::to_device, &a, &h, 1) == 1 && dst == 1) return true;
    static std::atomic<bool> said{false};
    if (!said.exchange(true))
        uhmm::log::get().warn("copy engine: process_vm_readv refused; the CPU copy path uses memcpy "
                              "(an unmapped host page will crash instead of failing with EFAULT)");
    return false;
}

}  // namespace

CpuWorker::CpuWorker(std::byte* arena_base, std::span<const std::byte> runtime)
    : base_(arena_base), runtime_(runtime), checked_(vm_copy_works()),
      thread_(base::start_internal_thread("uhmm-copy-cpu", [this] { run(); })) {}

CpuWorker::~CpuWorker() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
}

void CpuWorker::enqueue(std::shared_ptr<FenceState> fence, Direction dir, std::vector<Item> items) {
    {
        std::lock_guard lk(mu_);
        jobs_.push_back(Job{std::move(fence), dir, std::move(items)});
    }
    cv_.notify_one();
}

void CpuWorker::run() {
    // A guarded copy needs the fault signals deliverable in this thread
    // (internal threads start with every signal blocked).
    FaultsUnblocked faults;
    for (;;) {
        Job job;
        {
            std::unique_lock lk(mu_);
            cv_.wait(lk, [&] { return stopping_ || !jobs_.empty(); });
            if (jobs_.empty()) return;   // stopping, and nothing left to finish
            job = std::move(jobs_.front());
            jobs_.pop_front();
        }
        if (guarded_copy_ready()) copy_guarded(job);
        else if (checked_) copy_checked(job);
        else copy_unchecked(job);
    }
}

void CpuWorker::copy_unchecked(const Job& job) {
    for (const auto& it : job.items) {
        cpu_copy(base_, job.dir, it.op);
        job.fence->complete(it.index, it.op.len, {});
    }
}

void CpuWorker::copy_guarded(const Job& job) {
    for (const auto& it : job.items) {
        if (runtime_owned(it.op)) {
            cpu_copy(base_, job.dir, it.op);
            job.fence->complete(it.index, it.op.len, {});
            continue;
        }
        complete_guarded(*job.fence, it.index, cpu_copy_guarded(base_, job.dir, it.op));
    }
}

bool CpuWorker::runtime_owned(const CopyOp& op) const noexcept {
    const auto* h = static_cast<const std::byte*>(op.host);
    return !runtime_.empty() && h >= runtime_.data() && h + op.len <= runtime_.data() + runtime_.size();
}

void CpuWorker::copy_checked(const Job& job) {
    std::vector<iovec> arena, host;
    std::vector<const Item*> chunk;
    const auto& items = job.items;
    std::size_t next = 0;
    while (next < items.size()) {
        // Gather up to kIovMax application-memory ops; runtime-owned ones are
        // copied on the spot.
        arena.clear();
        host.clear();
        chunk.clear();
        for (; next < items.size() && chunk.size() < kIovMax; ++next) {
            const Item& it = items[next];
            if (runtime_owned(it.op)) {
                cpu_copy(base_, job.dir, it.op);
                job.fence->complete(it.index, it.op.len, {});
                continue;
            }
            arena.push_back({base_ + it.op.arena_offset, it.op.len});
            host.push_back({it.op.host, it.op.len});
            chunk.push_back(&it);
        }
        std::size_t k = 0;
        while (k < chunk.size()) {
            const long rc = vm_copy(job.dir, arena.data() + k, host.data() + k, chunk.size() - k);
            const std::uint64_t got = rc > 0 ? static_cast<std::uint64_t>(rc) : 0;
            // Every op wholly inside `got` is done.
            std::uint64_t at = 0;
            for (; k < chunk.size() && at + chunk[k]->op.len <= got; at += chunk[k]->op.len, ++k)
                job.fence->complete(chunk[k]->index, chunk[k]->op.len, {});
            if (k == chunk.size()) break;
            // The call stopped inside (or just before) op k: redo it alone for
            // its own verdict, then go on after it.
            const long r1 = vm_copy(job.dir, &arena[k], &host[k], 1);
            const std::uint32_t len = chunk[k]->op.len;
            if (r1 == static_cast<long>(len)) {
                job.fence->complete(chunk[k]->index, len, {});
            } else {
                const auto partial = static_cast<std::uint32_t>(r1 > 0 ? r1 : 0);
                job.fence->complete(chunk[k]->index, partial, errno_code(r1 < 0 ? static_cast<int>(-r1) : EFAULT));
            }
            ++k;
        }
    }
}

}  // namespace uhmm::migrate::detail
