// Policy: the thread and the counts every policy shares (see the header).
#include "policy/policy.hpp"

#include <pthread.h>

#include "base/internal_thread.hpp"

namespace uhmm::policy {

Policy::~Policy() { stop(); }

void Policy::start(const char* name, std::chrono::milliseconds period) {
    thread_ = base::start_internal_thread(name, [this, period] { run(period); });
}

void Policy::stop() noexcept {
    {
        std::lock_guard lock(m_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

std::uint64_t Policy::rounds() const {
    std::lock_guard lock(m_);
    return rounds_;
}

std::uint64_t Policy::migrations() const {
    std::lock_guard lock(m_);
    return migrations_;
}

std::size_t Policy::round() {
    std::lock_guard serial(round_lock_);
    const Moved moved = step();
    std::lock_guard lock(m_);
    ++rounds_;
    migrations_ += moved.calls;
    return moved.pages;
}

void Policy::run(std::chrono::milliseconds period) {
    std::unique_lock lock(m_);
    while (!wake_.wait_for(lock, period, [&] { return stopping_; })) {
        lock.unlock();
        (void)round();
        lock.lock();
    }
}

}  // namespace uhmm::policy
