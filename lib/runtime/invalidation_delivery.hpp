// Hands invalidations raised on the fault thread to the device notifiers,
// from a thread of its own.
//
// A notifier callback takes its device's lock, and a device thread may hold
// that lock while it touches managed memory (reading a host page through
// process_vm_readv, say), which needs the fault thread. So the fault thread
// never runs callbacks: it queues the invalidation (a fixed ring, no
// allocation, a mutex held for O(1) work only) and goes on reading. One
// delivery thread calls the registry, in the order the events were read.
//
// A full ring never blocks the fault thread: the overflow is merged into one
// invalidation covering every range that did not fit (event unmap, the
// strongest: a device drops what it had). Over-invalidating is always safe.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include <uhmm/mirror.hpp>

namespace uhmm {

class InvalidationDelivery {
public:
    explicit InvalidationDelivery(mirror::NotifierRegistry& registry);
    ~InvalidationDelivery();   // delivers what is queued, then stops
    InvalidationDelivery(const InvalidationDelivery&) = delete;
    InvalidationDelivery& operator=(const InvalidationDelivery&) = delete;

    // Fault-thread safe: no allocation, never waits for a callback.
    void post(const mirror::Invalidation& inv) noexcept;
    // Returns once everything posted before the call has been delivered.
    // Not from the delivery thread (a callback) or the fault thread.
    void drain();

    std::uint64_t delivered() const;   // posts answered (a merged delivery answers several)
    std::uint64_t merged() const;      // posts folded into an overflow invalidation

private:
    void run();

    static constexpr std::size_t kCapacity = 1024;
    mirror::NotifierRegistry& registry_;
    mutable std::mutex m_;
    std::condition_variable wake_, done_;
    std::array<mirror::Invalidation, kCapacity> ring_{};
    std::size_t head_ = 0, count_ = 0;
    bool overflow_ = false;
    mirror::Invalidation overflow_inv_{};
    std::uint64_t overflow_count_ = 0;   // posts folded into overflow_inv_
    std::uint64_t posted_ = 0, delivered_ = 0, merged_ = 0;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace uhmm
