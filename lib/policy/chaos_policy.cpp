// ChaosPolicy (see the header).
#include "policy/chaos_policy.hpp"

#include <pthread.h>

#include <algorithm>
#include <chrono>

#include "base/internal.hpp"

namespace uhmm::policy {

namespace {
constexpr std::size_t kPage = 4096;
}  // namespace

ChaosPolicy::ChaosPolicy(Runtime& rt, const PolicyConfig& config) : rt_(rt), config_(config), rng_(config.seed) {
    thread_ = std::thread([this] {
        base::mark_internal_thread();
        ::pthread_setname_np(::pthread_self(), "uhmm-chaos");
        run();
    });
}

ChaosPolicy::~ChaosPolicy() {
    {
        std::lock_guard lock(m_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

std::uint64_t ChaosPolicy::rounds() const {
    std::lock_guard lock(m_);
    return rounds_;
}

std::uint64_t ChaosPolicy::migrations() const {
    std::lock_guard lock(m_);
    return migrations_;
}

void ChaosPolicy::run() {
    const auto period = std::chrono::milliseconds(config_.chaos_period_ms);
    std::unique_lock lock(m_);
    while (!wake_.wait_for(lock, period, [&] { return stopping_; })) {
        lock.unlock();
        (void)round();
        lock.lock();
    }
}

std::size_t ChaosPolicy::round() {
    std::lock_guard serial(round_lock_);
    std::size_t moved = 0;
    std::uint64_t calls_that_moved = 0;
    // Each host page of each range is picked with probability `fraction`
    // (a Bernoulli draw per page, from the one seeded generator), and the
    // picked pages go in runs of neighbours: one migrate call per run.
    std::bernoulli_distribution pick(config_.chaos_fraction);
    const Runtime::MigrateOptions background{nullptr, false};
    for (const RangeInfo& r : rt_.ranges()) {
        const std::size_t pages = r.len / kPage;
        states_.resize(pages);
        if (rt_.residency(reinterpret_cast<void*>(r.start), r.len, states_)) continue;   // gone meanwhile
        for (std::size_t p = 0; p < pages;) {
            if (states_[p] != PageState::host || !pick(rng_)) {
                ++p;
                continue;
            }
            std::size_t q = p + 1;
            while (q < pages && states_[q] == PageState::host && pick(rng_)) ++q;
            auto res = rt_.migrate(reinterpret_cast<void*>(r.start + p * kPage), (q - p) * kPage, Target::device,
                                   background);
            if (res && res->migrated) {
                moved += res->migrated;
                ++calls_that_moved;
            }
            p = q;
        }
    }
    std::lock_guard lock(m_);
    ++rounds_;
    migrations_ += calls_that_moved;
    return moved;
}

}  // namespace uhmm::policy
