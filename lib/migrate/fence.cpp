// Fence: the completion object of one batch, like a DMA fence.
//
// Waiting uses a mutex and a condition variable per fence rather than a
// futex on the countdown: waits are per batch (hundreds of pages), so the
// cost is negligible next to the copy, and the condition variable keeps the
// code obviously correct under TSan. A callback registered before the signal
// runs on the signalling thread, after the waiters are woken and without any
// lock held, so it may submit more work; one registered after runs at once.
#include "migrate/fence_state.hpp"

#include "base/log.hpp"

namespace uhmm::migrate {

namespace detail {

FenceState::FenceState(std::size_t ops) : results(ops), remaining(ops) {}

std::shared_ptr<FenceState> make_fence_state(std::size_t ops) {
    auto s = std::make_shared<FenceState>(ops);
    if (ops == 0) s->signalled.store(true, std::memory_order_release);
    return s;
}

void FenceState::complete(std::size_t index, std::uint32_t bytes, std::error_code error) noexcept {
    results[index] = OpResult{bytes, error};
    if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) signal();
}

void FenceState::signal() noexcept {
    std::vector<Fence::Callback> run;
    {
        std::lock_guard lk(mu);
        signalled.store(true, std::memory_order_release);
        run.swap(callbacks);
    }
    cv.notify_all();
    if (run.empty()) return;
    const Fence self(shared_from_this());
    for (auto& cb : run) {
        // A callback that throws must not take the completion thread down.
        try {
            cb(self);
        } catch (const std::exception& e) {
            uhmm::log::get().error("copy engine: fence callback threw: {}", e.what());
        } catch (...) {
            uhmm::log::get().error("copy engine: fence callback threw");
        }
    }
}

}  // namespace detail

Fence::Fence(std::shared_ptr<detail::FenceState> state) noexcept : s_(std::move(state)) {}

bool Fence::poll() const noexcept { return !s_ || s_->signalled.load(std::memory_order_acquire); }

std::error_code Fence::wait() const {
    if (!poll()) {
        std::unique_lock lk(s_->mu);
        s_->cv.wait(lk, [&] { return s_->signalled.load(std::memory_order_acquire); });
    }
    return error();
}

bool Fence::wait_for(std::chrono::nanoseconds timeout) const {
    if (poll()) return true;
    std::unique_lock lk(s_->mu);
    return s_->cv.wait_for(lk, timeout, [&] { return s_->signalled.load(std::memory_order_acquire); });
}

void Fence::on_complete(Callback cb) const {
    if (s_ && !poll()) {
        std::unique_lock lk(s_->mu);
        if (!s_->signalled.load(std::memory_order_acquire)) {
            s_->callbacks.push_back(std::move(cb));
            return;
        }
    }
    cb(*this);
}

std::span<const OpResult> Fence::results() const noexcept {
    if (!s_) return {};
    return s_->results;
}

std::error_code Fence::error() const noexcept {
    for (const auto& r : results())
        if (r.error) return r.error;
    return {};
}

std::size_t Fence::failed() const noexcept {
    std::size_t n = 0;
    for (const auto& r : results()) n += r.error ? 1 : 0;
    return n;
}

std::uint64_t Fence::bytes() const noexcept {
    std::uint64_t n = 0;
    for (const auto& r : results()) n += r.bytes;
    return n;
}

std::size_t Fence::size() const noexcept { return s_ ? s_->results.size() : 0; }

}  // namespace uhmm::migrate
