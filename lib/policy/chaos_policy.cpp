// ChaosPolicy (see the header).
#include "policy/chaos_policy.hpp"

namespace uhmm::policy {

namespace {
constexpr std::size_t kPage = 4096;
}  // namespace

ChaosPolicy::ChaosPolicy(Runtime& rt, const PolicyConfig& config) : rt_(rt), config_(config), rng_(config.seed) {
    start("uhmm-chaos", std::chrono::milliseconds(config.chaos_period_ms));
}

Policy::Moved ChaosPolicy::step() {
    Moved moved;
    // Each host page of each range is picked with probability `fraction`
    // (a Bernoulli draw per page, from the one seeded generator), and the
    // picked pages go in runs of neighbours: one migrate call per run.
    std::bernoulli_distribution pick(config_.chaos_fraction);
    const Runtime::MigrateOptions background{nullptr, false};
    for (const RangeInfo& r : rt_.ranges()) {
        const std::size_t pages = r.len / kPage;
        states_.resize(pages);
        if (rt_.residency(reinterpret_cast<void*>(r.start), r.len, states_)) continue;   // gone meanwhile
        // Advice: pages that prefer the host or are read-mostly stay.
        advice_.resize(pages);
        if (!rt_.advice(reinterpret_cast<void*>(r.start), r.len, advice_))
            for (std::size_t p = 0; p < pages; ++p)
                if (advice_[p] & (advice_bits::prefer_host | advice_bits::read_mostly)) states_[p] = PageState::none;
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
                moved.pages += res->migrated;
                ++moved.calls;
            }
            p = q;
        }
    }
    return moved;
}

}  // namespace uhmm::policy
