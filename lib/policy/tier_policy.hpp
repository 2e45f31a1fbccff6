// policy=tier: keep host-resident managed memory within tier_hot, demoting
// the coldest pages to the device and letting CPU touches promote them.
//
// The decisions are TierModel's (lib/policy/tier/tier_model.hpp). This feeds
// it what user space can see, once per round (kPeriod): the page states the
// runtime reports, compared with the previous round's. NONE → HOST is a
// first touch, DEVICE → HOST a promotion (a CPU fault brought it home), a
// page gone to NONE was freed. Then it demotes what the model names, in runs
// of neighbours, with non-blockable migrations; a page that did not move is
// handed back (on_demote_failed).
//
// What it does not feed yet: writes. UFFD_FEATURE_WP_ASYNC applies to a
// whole userfaultfd and would resolve the synchronous write-protect faults
// that freeze pages while they migrate, and this kernel has neither
// soft-dirty nor idle-page tracking; probing the demotion candidates with
// the runtime's own write-protection is the next step. Reads are invisible
// in any case: a page only read shows it is hot when it refaults, and the
// model weighs how soon (the refault distance).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <vector>

#include <uhmm/runtime.hpp>

#include "policy/policy.hpp"
#include "policy/tier/tier_model.hpp"

namespace uhmm::policy {

class TierPolicy final : public Policy {
public:
    static constexpr std::chrono::milliseconds kPeriod{50};

    TierPolicy(Runtime& rt, const PolicyConfig& config);
    ~TierPolicy() override { stop(); }

private:
    Moved step() override;
    tier::Tick now() const;
    // Compare one range's states with the last round's and tell the model.
    void observe(const RangeInfo& r, std::vector<PageState>& last, tier::Tick t);
    Moved demote(tier::Tick t);

    Runtime& rt_;
    tier::TierModel model_;
    const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    // Only rounds touch these, and rounds never overlap.
    std::map<std::uintptr_t, std::vector<PageState>> last_;   // each range's states at the last round
    std::vector<PageState> states_;
    std::vector<tier::PageId> victims_;
};

}  // namespace uhmm::policy
