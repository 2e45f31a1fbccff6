// uhmm::PrefetchFence — the completion of an asynchronous prefetch
// (Runtime::prefetch_async, as cudaMemPrefetchAsync on a stream).
//
// Prefetches queued with prefetch_async() run one at a time, in the order
// they were queued, on a thread of the runtime's own; the application's own
// accesses meanwhile are correct as always (a write to a page in flight waits
// for it). A fence is ready once its prefetch and every prefetch queued before
// it have finished, so waiting on the last fence waits for them all
// (Runtime::prefetch_fence() gives one for everything queued so far).
// Fences are cheap to copy: copies share one completion.
#pragma once

#include <chrono>
#include <memory>

#include <uhmm/migrate_result.hpp>
#include <uhmm/result.hpp>

namespace uhmm {

class PrefetchFence {
public:
    // A fence with nothing to wait for: ready, an empty result.
    PrefetchFence() = default;

    bool ready() const noexcept;
    // Block until ready; then what the prefetch did, page by page (an
    // empty result for prefetch_fence()). A prefetch the runtime dropped
    // because it was going away unstarted: ECANCELED. One whose memory was
    // unmapped meanwhile: EFAULT.
    Result<MigrateResult> wait() const;
    // Wait at most `timeout`: whether it is ready.
    bool wait_for(std::chrono::nanoseconds timeout) const;

    struct State;
    explicit PrefetchFence(std::shared_ptr<State> s) noexcept : s_(std::move(s)) {}

private:
    std::shared_ptr<State> s_;
};

}  // namespace uhmm
