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
// Writes come from watching the next victims (Runtime::watch_writes): after
// each round's demotions, the coldest pages the model would take next (at
// least kMinWatch, twice the last round's demotions, at most kMaxWatch) are
// write-protected by the runtime; the next round reads which of them were
// written (take_writes) and feeds those to the model's on_scan, which moves
// them to the hot end (a second use proves them). A page costs one fault per
// watch at most, and only pages about to be demoted are watched, so the cost
// is bounded by the demotions it may save. Why not the kernel's own bits:
// UFFD_FEATURE_WP_ASYNC applies to a whole userfaultfd and would resolve the
// synchronous write-protect faults that freeze pages while they migrate, and
// this kernel has neither soft-dirty nor idle-page tracking. Reads stay
// invisible: a page only read shows it is hot when it refaults, and the
// model weighs how soon (the refault distance).
//
// Advice (Runtime::advise) takes pages out of the model's hands: pages that
// prefer the host or are read-mostly are never demoted, pages that prefer
// the device are demoted every round they are found on the host, and none of
// them counts against tier_hot.
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
    static constexpr std::size_t kMinWatch = 256, kMaxWatch = 8192;   // pages watched per round

    TierPolicy(Runtime& rt, const PolicyConfig& config);
    ~TierPolicy() override { stop(); }

private:
    Moved step() override;
    tier::Tick now() const;
    // Compare one range's states with the last round's and tell the model.
    void observe(const RangeInfo& r, std::vector<PageState>& last, tier::Tick t);
    Moved demote(tier::Tick t);
    // Hide advised pages from the model (their states_ read NONE to it) and
    // note the host pages that prefer the device.
    void apply_advice(const RangeInfo& r);
    // Send the pages that prefer the device back there.
    Moved demote_preferred();
    // Which of the pages watched last round were written: to the model.
    void collect_writes(tier::Tick t);
    // Watch the pages the model would demote next (`demoted`: this round's count).
    void watch_next(std::size_t demoted);

    Runtime& rt_;
    tier::TierModel model_;
    const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    // Only rounds touch these, and rounds never overlap.
    std::map<std::uintptr_t, std::vector<PageState>> last_;   // each range's states at the last round
    std::vector<PageState> states_;
    std::vector<tier::PageId> victims_;
    std::vector<tier::PageId> watched_;   // sorted: the pages watched last round
    std::vector<tier::PageId> written_;
    std::vector<std::uint8_t> bits_;
    std::vector<std::uint8_t> advice_;         // the range's advice bits, this round
    std::vector<tier::PageId> preferred_;      // host pages that prefer the device, this round
};

}  // namespace uhmm::policy
