// TierModel: the budget after every step, which pages go first (untouched
// before written, unproven before refaulted, grace), frees, determinism; and
// on small Zipf traces, its hit rate against FIFO and Belady's optimum (the
// optimum itself checked against an exhaustive search on tiny traces).
#include <catch2/catch.hpp>

#include "policy/tier/tier_model.hpp"
#include "policy/tier/tier_sim.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <vector>

using namespace uhmm::tier;

namespace {

TierParams no_grace() {
    TierParams p;
    p.grace = 0;
    return p;
}

std::vector<PageId> demote(TierModel& m, Tick t) {
    std::vector<PageId> out;
    const std::size_t n = m.demotions(t, out);
    REQUIRE(n == out.size());
    return out;
}

// A random stream of every kind of event, with the truth kept beside the
// model; `log` receives every decision.
void random_run(TierModel& m, std::uint64_t seed, int steps, std::vector<PageId>* log) {
    std::mt19937_64 rng(seed);
    std::map<PageId, Residency> truth;
    std::vector<PageId> victims, written;
    for (int step = 0; step < steps; ++step) {
        const Tick t = static_cast<Tick>(step) * 3;
        const PageId p = rng() % 300;
        const auto kind = rng() % 16;
        if (kind < 10) {
            auto it = truth.find(p);
            if (it == truth.end()) {
                m.on_first_touch(p, t);
                truth[p] = Residency::host;
            } else if (it->second == Residency::device) {
                m.on_promote(p, t);
                it->second = Residency::host;
            }
        } else if (kind < 13) {
            written.clear();
            for (auto& [q, where] : truth)
                if (where == Residency::host && rng() % 4 == 0) written.push_back(q);
            m.on_scan(written, t);
        } else if (kind < 15) {
            m.on_freed(p);
            truth.erase(p);
        } else if (auto it = truth.find(p); it != truth.end() && it->second == Residency::device) {
            m.on_demote_failed(p, t);
            it->second = Residency::host;
        }
        victims.clear();
        m.demotions(t, victims);
        for (PageId v : victims) {
            REQUIRE(truth.count(v) == 1);
            REQUIRE(truth[v] == Residency::host);
            truth[v] = Residency::device;
        }
        if (log) {
            log->insert(log->end(), victims.begin(), victims.end());
            log->push_back(~PageId{0});  // step boundary
        }
        // The budget holds after every step, and the model agrees with the truth.
        REQUIRE(m.host_pages() <= m.hot_pages());
        std::size_t host = 0, device = 0, disagree = 0;
        for (auto& [q, where] : truth) {
            disagree += m.where(q) != where;
            (where == Residency::host ? host : device) += 1;
        }
        REQUIRE(disagree == 0);
        REQUIRE(m.host_pages() == host);
        REQUIRE(m.device_pages() == device);
    }
}

// The fewest misses any policy can have (a page must be on the host when
// used, at most `hot` there after each access): every choice, exhaustively.
std::uint64_t exhaustive_min_misses(const sim::Trace& trace, std::size_t hot) {
    std::map<std::uint32_t, std::uint64_t> best{{0u, 0}};  // host set → misses
    for (std::uint32_t op : trace.ops) {
        const std::uint32_t bit = 1u << (op & ~sim::Trace::kWrite);
        std::map<std::uint32_t, std::uint64_t> next;
        auto offer = [&](std::uint32_t set, std::uint64_t misses) {
            auto [it, fresh] = next.try_emplace(set, misses);
            if (!fresh) it->second = std::min(it->second, misses);
        };
        for (auto [set, misses] : best) {
            if (set & bit) {
                offer(set, misses);
                continue;
            }
            const std::uint32_t with = set | bit;
            if (static_cast<std::size_t>(std::popcount(with)) <= hot) {
                offer(with, misses + 1);
                continue;
            }
            for (std::uint32_t v = with; v; v &= v - 1) offer(with & ~(v & -v), misses + 1);
        }
        best.swap(next);
    }
    std::uint64_t m = ~std::uint64_t{0};
    for (auto [set, misses] : best) m = std::min(m, misses);
    return m;
}

}  // namespace

TEST_CASE("tier: the budget holds after every step of a random stream", "[tier]") {
    for (std::size_t hot : {0u, 1u, 7u, 64u}) {
        TierParams p;
        p.grace = 10;
        p.grace_share = 0.5;
        TierModel m(hot, p);
        random_run(m, 11 + hot, 3000, nullptr);
    }
}

TEST_CASE("tier: a page written since the last scan goes after untouched ones", "[tier]") {
    TierModel m(4, no_grace());
    for (PageId p = 1; p <= 4; ++p) m.on_first_touch(p, 0);
    // The scan right after a first touch may only see the touch's own write.
    const PageId first[] = {1, 2, 3, 4};
    m.on_scan(first, 10);
    const PageId two[] = {2};
    m.on_scan(two, 20);
    m.on_first_touch(5, 30);
    m.set_hot_pages(2);
    CHECK(demote(m, 30) == std::vector<PageId>{1, 3, 4});
    CHECK(m.where(2) == Residency::host);
    CHECK(m.where(5) == Residency::host);
}

TEST_CASE("tier: the write-scan order holds among proven pages too", "[tier]") {
    TierParams p = no_grace();
    p.adapt = false;
    p.protected_share = 1;
    TierModel m(2, p);
    m.on_first_touch(1, 0);
    m.on_first_touch(2, 1);
    m.on_first_touch(3, 2);
    CHECK(demote(m, 2) == std::vector<PageId>{1});
    m.on_promote(1, 3);  // back at once: proven
    CHECK(demote(m, 3) == std::vector<PageId>{2});
    m.on_promote(2, 4);  // proven as well, after page 1
    CHECK(demote(m, 4) == std::vector<PageId>{3});
    // Without the write, page 1 (proven first) would go first.
    const PageId one[] = {1};
    m.on_scan(one, 10);
    m.set_hot_pages(1);
    CHECK(demote(m, 10) == std::vector<PageId>{2});
    CHECK(m.where(1) == Residency::host);
}

TEST_CASE("tier: a page that faults back soon after demotion outlives pages used once", "[tier]") {
    TierParams p = no_grace();
    p.adapt = false;
    TierModel m(3, p);
    for (PageId q = 1; q <= 3; ++q) m.on_first_touch(q, q);
    m.on_first_touch(4, 4);
    CHECK(demote(m, 4) == std::vector<PageId>{1});
    m.on_promote(1, 5);  // refault distance 0: within the window
    CHECK(demote(m, 5) == std::vector<PageId>{2});
    // A stream of pages used once never pushes page 1 out.
    for (PageId q = 10; q < 40; ++q) {
        m.on_first_touch(q, q);
        REQUIRE(demote(m, q).size() == 1);
        REQUIRE(m.where(1) == Residency::host);
    }
    CHECK(m.stats().refaults_proven == 1);
}

TEST_CASE("tier: the protected share follows the refaults (ARC's ghost hits)", "[tier]") {
    TierParams p = no_grace();
    p.protected_share = 0.5;
    TierModel m(4, p);  // refault window: 4 demotions
    CHECK(m.protected_target() == 2);
    for (PageId q = 1; q <= 5; ++q) m.on_first_touch(q, q);
    CHECK(demote(m, 5) == std::vector<PageId>{1});
    // Refaults of pages demoted unproven: probation was short of room.
    m.on_promote(1, 6);
    CHECK(m.protected_target() == 1);
    CHECK(demote(m, 6) == std::vector<PageId>{2});
    m.on_promote(2, 7);
    CHECK(m.protected_target() == 0);
    CHECK(demote(m, 7) == std::vector<PageId>{3});  // 1 and 2 overflowed to probation
    m.on_first_touch(6, 8);
    CHECK(demote(m, 8) == std::vector<PageId>{4});
    m.on_first_touch(7, 9);
    CHECK(demote(m, 9) == std::vector<PageId>{5});
    m.on_first_touch(8, 10);
    CHECK(demote(m, 10) == std::vector<PageId>{1});
    // A refault of a page that had been protected: protected was short, by
    // as many steps as there are unproven ghosts per protected one (3 / 1).
    m.on_promote(1, 11);
    CHECK(m.protected_target() == 3);
    CHECK(m.stats().refaults_probation == 2);
    CHECK(m.stats().refaults_protected == 1);
}

TEST_CASE("tier: a just-promoted page has its grace period", "[tier]") {
    TierParams p;
    p.grace = 100;
    p.grace_share = 1;
    p.adapt = false;
    TierModel m(2, p);
    m.on_first_touch(1, 0);
    m.on_first_touch(2, 0);
    m.on_first_touch(3, 500);
    CHECK(demote(m, 500) == std::vector<PageId>{1});  // 3 is in grace
    m.on_promote(1, 510);
    CHECK(demote(m, 510) == std::vector<PageId>{2});  // 1 and 3 are in grace
    // Only pages in grace left: the oldest arrival goes.
    m.on_first_touch(4, 520);
    CHECK(demote(m, 520) == std::vector<PageId>{3});
    // Grace over: page 4 (used once) goes; page 1 came back soon after its
    // demotion, which proved it.
    m.on_first_touch(5, 700);
    CHECK(demote(m, 700) == std::vector<PageId>{4});
    CHECK(m.where(1) == Residency::host);
}

TEST_CASE("tier: grace never holds more than its share of the budget", "[tier]") {
    TierParams p;
    p.grace = 1'000'000;
    p.grace_share = 0.5;
    TierModel m(4, p);
    for (PageId q = 1; q <= 4; ++q) m.on_first_touch(q, q);
    m.on_first_touch(5, 5);
    // Pages 1..3 left grace early (at most 2 in grace), so the oldest goes.
    CHECK(demote(m, 5) == std::vector<PageId>{1});
}

TEST_CASE("tier: freed pages leave the model", "[tier]") {
    TierModel m(2, no_grace());
    m.on_first_touch(1, 0);
    m.on_first_touch(2, 1);
    m.on_first_touch(3, 2);
    CHECK(demote(m, 2) == std::vector<PageId>{1});
    CHECK(m.device_pages() == 1);

    m.on_freed(1);  // a device page
    m.on_freed(2);  // a host page
    m.on_freed(99);  // unknown: nothing
    CHECK(m.where(1) == Residency::unknown);
    CHECK(m.where(2) == Residency::unknown);
    CHECK(m.host_pages() == 1);
    CHECK(m.device_pages() == 0);

    // Reports about freed pages are ignored; they come back as new pages.
    const PageId stale[] = {1, 2};
    m.on_scan(stale, 5);
    CHECK(m.host_pages() == 1);
    m.on_first_touch(2, 6);
    m.on_first_touch(4, 7);
    CHECK(demote(m, 7) == std::vector<PageId>{3});
    CHECK(m.stats().freed == 2);
}

TEST_CASE("tier: a failed demotion puts the page back on the host", "[tier]") {
    TierModel m(1, no_grace());
    m.on_first_touch(1, 0);
    m.on_first_touch(2, 1);
    CHECK(demote(m, 1) == std::vector<PageId>{1});
    m.on_demote_failed(1, 2);
    CHECK(m.where(1) == Residency::host);
    CHECK(m.host_pages() == 2);
    // It is retried after the older page, not first again.
    CHECK(demote(m, 3) == std::vector<PageId>{2});
}

TEST_CASE("tier: the same events give the same decisions", "[tier]") {
    std::vector<PageId> a, b;
    TierParams p;
    p.grace = 6;
    {
        TierModel m(40, p);
        random_run(m, 5, 4000, &a);
    }
    {
        TierModel m(40, p);
        random_run(m, 5, 4000, &b);
    }
    CHECK(a == b);
    CHECK(a.size() > 4000);

    sim::ZipfSpec spec;
    spec.pages = 1024;
    spec.accesses = 20000;
    const auto trace = sim::zipf_trace(spec);
    CHECK(trace.ops == sim::zipf_trace(spec).ops);
    const auto r1 = sim::run_tier(trace, 100, 64, p);
    const auto r2 = sim::run_tier(trace, 100, 64, p);
    CHECK(r1.hits == r2.hits);
    CHECK(r1.demotions == r2.demotions);
}

TEST_CASE("tier: run_opt is the optimum (exhaustive search on tiny traces)", "[tier][sim]") {
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        sim::ZipfSpec spec;
        spec.pages = 6;
        spec.accesses = 24;
        spec.skew = 0.8;
        spec.seed = seed;
        const auto trace = sim::zipf_trace(spec);
        for (std::size_t hot : {1u, 2u, 3u}) {
            const auto opt = sim::run_opt(trace, hot);
            INFO("seed " << seed << " hot " << hot);
            CHECK(opt.accesses - opt.hits == exhaustive_min_misses(trace, hot));
        }
    }
}

TEST_CASE("tier: on Zipf traces the model beats FIFO clearly and never OPT", "[tier][sim]") {
    for (double skew : {0.9, 1.1}) {
        for (std::uint64_t seed : {1u, 2u}) {
            sim::ZipfSpec spec;
            spec.pages = 2048;
            spec.accesses = 50000;
            spec.skew = skew;
            spec.seed = seed;
            const auto trace = sim::zipf_trace(spec);
            for (double share : {0.1, 0.25}) {
                const auto hot = static_cast<std::size_t>(share * spec.pages);
                TierParams p;
                p.grace = 128;
                const auto tier = sim::run_tier(trace, hot, 128, p);
                const auto fifo = sim::run_fifo(trace, hot);
                const auto lru = sim::run_lru(trace, hot);
                const auto opt = sim::run_opt(trace, hot);
                INFO("skew " << skew << " seed " << seed << " hot " << hot << ": tier " << tier.hit_rate()
                             << " fifo " << fifo.hit_rate() << " lru " << lru.hit_rate() << " opt "
                             << opt.hit_rate());
                CHECK(tier.over_budget_steps == 0);
                CHECK(tier.hit_rate() >= fifo.hit_rate() + 0.03);
                CHECK(tier.hits <= opt.hits);
                CHECK(fifo.hits <= opt.hits);
                CHECK(lru.hits <= opt.hits);
                CHECK(tier.accesses == spec.accesses);
                CHECK(tier.hits + tier.first_touches + tier.promotions == tier.accesses);
            }
        }
    }
}

TEST_CASE("candidates names the next victims, coldest first, and changes nothing") {
    TierModel m(4, no_grace());
    for (PageId p = 1; p <= 6; ++p) m.on_first_touch(p, p);
    m.on_scan({}, 7);
    // Page 2 written after its first touch: proven, so it goes last.
    const std::vector<PageId> written{2};
    m.on_scan(written, 8);
    std::vector<PageId> next;
    CHECK(m.candidates(3, next) == 3);
    CHECK(next == std::vector<PageId>{1, 3, 4});
    next.clear();
    CHECK(m.candidates(100, next) == 6);
    CHECK(next.back() == 2);
    CHECK(m.host_pages() == 6);
    // The two demotions that follow are the first two candidates.
    CHECK(demote(m, 9) == std::vector<PageId>{1, 3});
    next.clear();
    m.candidates(2, next);
    CHECK(next == std::vector<PageId>{4, 5});
}
