// policy=chaos: every chaos_period_ms, a seeded random chaos_fraction of the
// host-resident managed pages goes to the device; CPU touches bring them
// back. It exists to show that a program cannot tell it is being migrated
// under, and to let users test their own programs that way.
//
// A background policy: its migrations are non-blockable (a device whose
// lock is busy makes the runtime give up on that run, EAGAIN, and the next
// round tries other pages), and it uses the runtime's public calls only.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <uhmm/runtime.hpp>

namespace uhmm::policy {

class ChaosPolicy {
public:
    ChaosPolicy(Runtime& rt, const PolicyConfig& config);
    ~ChaosPolicy();   // stops the thread; a round in flight finishes first
    ChaosPolicy(const ChaosPolicy&) = delete;
    ChaosPolicy& operator=(const ChaosPolicy&) = delete;

    // One round, now, from the calling thread (the thread calls it each
    // period): returns the pages it moved.
    std::size_t round();

    std::uint64_t rounds() const;
    std::uint64_t migrations() const;   // migrate calls that moved at least one page

private:
    void run();

    Runtime& rt_;
    PolicyConfig config_;
    std::mt19937_64 rng_;   // only round() touches it, under round_lock_
    std::mutex round_lock_;
    std::vector<PageState> states_;   // reused across rounds
    mutable std::mutex m_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::uint64_t rounds_ = 0, migrations_ = 0;
    std::thread thread_;
};

}  // namespace uhmm::policy
