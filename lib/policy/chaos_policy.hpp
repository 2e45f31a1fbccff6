// policy=chaos: every chaos_period_ms, a seeded random chaos_fraction of the
// host-resident managed pages goes to the device; CPU touches bring them
// back. It exists to show that a program cannot tell it is being migrated
// under, and to let users test their own programs that way.
// Pages advised to prefer the host, or read-mostly, are left alone.
#pragma once

#include <random>
#include <vector>

#include <uhmm/runtime.hpp>

#include "policy/policy.hpp"

namespace uhmm::policy {

class ChaosPolicy final : public Policy {
public:
    ChaosPolicy(Runtime& rt, const PolicyConfig& config);
    ~ChaosPolicy() override { stop(); }

private:
    Moved step() override;

    Runtime& rt_;
    PolicyConfig config_;
    std::mt19937_64 rng_;             // rounds never overlap: no lock of its own
    std::vector<PageState> states_;   // reused across rounds
    std::vector<std::uint8_t> advice_;
};

}  // namespace uhmm::policy
