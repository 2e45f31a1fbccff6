// A thread that copies batches through the arena's CPU mapping off the
// submitting thread, so that a path with no kernel copy primitive (host →
// hugetlb arena), or a caller who prefers it (EngineOptions::cpu_worker),
// still gets an asynchronous fence like the rest of the io_uring engine.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include <uhmm/copy_engine.hpp>

#include "migrate/fence_state.hpp"

namespace uhmm::migrate::detail {

class CpuWorker {
public:
    struct Item {
        std::size_t index;   // op index in its fence
        CopyOp op;
    };

    // `runtime` is memory the runtime owns (the staging region): ops whose
    // host side lies in it are copied with plain memcpy, since it cannot
    // vanish under us.
    CpuWorker(std::byte* arena_base, std::span<const std::byte> runtime);
    ~CpuWorker();   // finishes every queued batch, then joins
    CpuWorker(const CpuWorker&) = delete;
    CpuWorker& operator=(const CpuWorker&) = delete;

    void enqueue(std::shared_ptr<FenceState> fence, Direction dir, std::vector<Item> items);

private:
    struct Job {
        std::shared_ptr<FenceState> fence;
        Direction dir;
        std::vector<Item> items;
    };
    void run();
    void copy_guarded(const Job& job);   // memcpy that answers EFAULT (guarded_copy.hpp)
    void copy_checked(const Job& job);   // process_vm_readv/writev
    void copy_unchecked(const Job& job);

    bool runtime_owned(const CopyOp& op) const noexcept;

    std::byte* base_;
    std::span<const std::byte> runtime_;
    bool checked_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Job> jobs_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace uhmm::migrate::detail
