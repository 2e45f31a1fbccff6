// PrefetchQueue and PrefetchFence (see the header).
#include "runtime/prefetch_queue.hpp"

#include "base/internal_thread.hpp"

namespace uhmm {

void PrefetchFence::State::complete(Result<MigrateResult> r) {
    {
        std::lock_guard lock(m);
        result = std::move(r);
        done = true;
    }
    cv.notify_all();
}

bool PrefetchFence::ready() const noexcept {
    if (!s_) return true;
    std::lock_guard lock(s_->m);
    return s_->done;
}

Result<MigrateResult> PrefetchFence::wait() const {
    if (!s_) return MigrateResult{};
    std::unique_lock lock(s_->m);
    s_->cv.wait(lock, [&] { return s_->done; });
    return s_->result;
}

bool PrefetchFence::wait_for(std::chrono::nanoseconds timeout) const {
    if (!s_) return true;
    std::unique_lock lock(s_->m);
    return s_->cv.wait_for(lock, timeout, [&] { return s_->done; });
}

PrefetchQueue::~PrefetchQueue() {
    std::deque<Item> dropped;
    {
        std::lock_guard lock(m_);
        stopping_ = true;
        dropped.swap(items_);
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    for (auto& item : dropped) item.state->complete(errno_code(ECANCELED));
}

PrefetchFence PrefetchQueue::push(Work work) {
    auto state = std::make_shared<PrefetchFence::State>();
    {
        std::lock_guard lock(m_);
        if (!thread_.joinable()) thread_ = base::start_internal_thread("uhmm-prefetch", [this] { run(); });
        items_.push_back({std::move(work), state});
    }
    wake_.notify_one();
    return PrefetchFence(state);
}

PrefetchFence PrefetchQueue::fence() {
    {
        std::lock_guard lock(m_);
        if (items_.empty() && !busy_) return PrefetchFence();
    }
    return push({});
}

void PrefetchQueue::run() {
    std::unique_lock lock(m_);
    for (;;) {
        wake_.wait(lock, [&] { return stopping_ || !items_.empty(); });
        if (stopping_) return;
        Item item = std::move(items_.front());
        items_.pop_front();
        busy_ = true;
        lock.unlock();
        Result<MigrateResult> r = MigrateResult{};
        if (item.work) {
            try {
                r = item.work();
            } catch (const std::bad_alloc&) {
                r = errno_code(ENOMEM);
            }
        }
        // Idle and complete in one step: a prefetch_fence() taken once this
        // fence is ready must find nothing in flight (ready at once).
        lock.lock();
        busy_ = false;
        item.state->complete(std::move(r));
    }
}

}  // namespace uhmm
