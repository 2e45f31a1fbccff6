// InvalidationDelivery (see the header for why a thread of its own).
#include "runtime/invalidation_delivery.hpp"

#include <pthread.h>

#include <algorithm>
#include <csignal>

#include "base/internal_thread.hpp"

namespace uhmm {

InvalidationDelivery::InvalidationDelivery(mirror::NotifierRegistry& registry) : registry_(registry) {
    thread_ = base::start_internal_thread("uhmm-invalidate", [this] { run(); });
}

InvalidationDelivery::~InvalidationDelivery() {
    {
        std::lock_guard lock(m_);
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
}

void InvalidationDelivery::post(const mirror::Invalidation& inv) noexcept {
    // Nobody mirrors anything: no lock, no wake-up on the fault path.
    if (registry_.empty()) return;
    {
        std::lock_guard lock(m_);
        ++posted_;
        if (count_ < kCapacity && !overflow_) {
            ring_[(head_ + count_) % kCapacity] = inv;
            ++count_;
        } else {
            // Full: fold it into one covering invalidation, delivered after
            // the ring (so after everything posted before it).
            if (!overflow_) {
                overflow_ = true;
                overflow_inv_ = inv;
            } else {
                overflow_inv_.start = std::min(overflow_inv_.start, inv.start);
                overflow_inv_.end = std::max(overflow_inv_.end, inv.end);
            }
            overflow_inv_.event = mirror::Event::unmap;
            overflow_inv_.owner = nullptr;
            overflow_inv_.blockable = true;
            ++overflow_count_;
            ++merged_;
        }
    }
    wake_.notify_one();
}

void InvalidationDelivery::run() {
    std::unique_lock lock(m_);
    for (;;) {
        wake_.wait(lock, [&] { return count_ || overflow_ || stopping_; });
        if (!count_ && !overflow_) return;   // stopping, nothing left
        mirror::Invalidation inv;
        std::uint64_t covers = 1;             // how many posts this delivery answers
        if (count_) {
            inv = ring_[head_];
            head_ = (head_ + 1) % kCapacity;
            --count_;
        } else {
            inv = overflow_inv_;
            covers = overflow_count_;
            overflow_ = false;
            overflow_count_ = 0;
        }
        lock.unlock();
        (void)registry_.invalidate(inv);
        lock.lock();
        delivered_ += covers;
        done_.notify_all();
    }
}

void InvalidationDelivery::drain() {
    std::unique_lock lock(m_);
    const std::uint64_t target = posted_;
    done_.wait(lock, [&] { return delivered_ >= target; });
}

std::uint64_t InvalidationDelivery::delivered() const {
    std::lock_guard lock(m_);
    return delivered_;
}

std::uint64_t InvalidationDelivery::merged() const {
    std::lock_guard lock(m_);
    return merged_;
}

}  // namespace uhmm
