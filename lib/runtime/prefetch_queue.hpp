// PrefetchQueue: Runtime::prefetch_async's thread (see include/uhmm/
// prefetch.hpp). One thread, started with the first asynchronous prefetch,
// runs them in the order queued; each completes its fence. A marker (no
// range) completes once everything before it has: prefetch_fence().
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include <uhmm/prefetch.hpp>

namespace uhmm {

struct PrefetchFence::State {
    mutable std::mutex m;
    mutable std::condition_variable cv;
    bool done = false;
    Result<MigrateResult> result = MigrateResult{};
    void complete(Result<MigrateResult> r);
};

class PrefetchQueue {
public:
    // run(item) does one prefetch (the runtime's synchronous path).
    using Work = std::function<Result<MigrateResult>()>;
    PrefetchQueue() = default;
    // Prefetches not started are completed with ECANCELED; the one running
    // finishes first.
    ~PrefetchQueue();
    PrefetchQueue(const PrefetchQueue&) = delete;
    PrefetchQueue& operator=(const PrefetchQueue&) = delete;

    // Queue `work` (an empty one is a marker); its fence. Starts the thread
    // on first use (std::system_error if it cannot start).
    PrefetchFence push(Work work);
    // A fence for everything queued so far: ready at once when idle.
    PrefetchFence fence();

private:
    struct Item {
        Work work;
        std::shared_ptr<PrefetchFence::State> state;
    };
    void run();

    std::mutex m_;
    std::condition_variable wake_;
    std::deque<Item> items_;
    bool busy_ = false, stopping_ = false;
    std::thread thread_;
};

}  // namespace uhmm
