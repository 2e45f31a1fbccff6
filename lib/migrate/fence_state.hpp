// The shared state behind a Fence: per-op results, a countdown of ops still in
// flight, and the waiters and callbacks to run when it reaches zero.
//
// Engines complete ops one by one (from a completion thread, a copy worker, or
// the submitting thread for ops refused up front); the op that brings the
// count to zero signals the fence. Results are written before the countdown's
// release and read after the signalled flag's acquire, so readers need no lock.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <system_error>
#include <vector>

#include <uhmm/copy_engine.hpp>

namespace uhmm::migrate::detail {

struct FenceState : std::enable_shared_from_this<FenceState> {
    explicit FenceState(std::size_t ops);

    // Record op `index`'s outcome; signals the fence when it was the last one.
    void complete(std::size_t index, std::uint32_t bytes, std::error_code error) noexcept;

    std::vector<OpResult> results;
    std::atomic<std::size_t> remaining;
    std::atomic<bool> signalled{false};
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Fence::Callback> callbacks;   // guarded by mu, emptied when signalled

private:
    void signal() noexcept;
};

// A new fence for `ops` ops (signalled at once when ops == 0).
std::shared_ptr<FenceState> make_fence_state(std::size_t ops);

}  // namespace uhmm::migrate::detail
