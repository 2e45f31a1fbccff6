// RuntimeConfig::parse: the defaults, every documented key at its documented
// default, refusals of unknown keys and bad values (EINVAL with a one-line
// `why` naming the key), and to_string() round trips. No userfaultfd needed.
#include <catch2/catch.hpp>

#include <set>
#include <string>

#include <uhmm/runtime.hpp>

using namespace uhmm;

namespace {

bool same(const RuntimeConfig& a, const RuntimeConfig& b) {
    return a.arena.backend == b.arena.backend && a.arena.index == b.arena.index && a.arena.size == b.arena.size &&
           a.arena.reserve == b.arena.reserve && a.engine == b.engine && a.fault_threads == b.fault_threads &&
           a.fault_around == b.fault_around && a.migrate_batch == b.migrate_batch &&
           a.policy.kind == b.policy.kind && a.policy.chaos_period_ms == b.policy.chaos_period_ms &&
           a.policy.chaos_fraction == b.policy.chaos_fraction && a.policy.seed == b.policy.seed &&
           a.policy.tier_hot == b.policy.tier_hot && a.min_range == b.min_range && a.socket == b.socket &&
           a.log == b.log && a.stats == b.stats;
}

std::string describe(const RuntimeConfig& c) {
    return c.to_string() + " [backend " + devmem::to_string(c.arena.backend) + " index " +
           std::to_string(c.arena.index) + " size " + std::to_string(c.arena.size) + " reserve " +
           std::to_string(c.arena.reserve) + " engine " + std::string(migrate::to_string(c.engine)) +
           " fault_threads " + std::to_string(c.fault_threads) + " fault_around " +
           std::to_string(c.fault_around) + " migrate_batch " + std::to_string(c.migrate_batch) + "]";
}

// parse(text) must fail with EINVAL and a one-line why that names `key`.
void expect_einval(const std::string& text, const std::string& key) {
    std::string why;
    auto r = RuntimeConfig::parse(text, &why);
    INFO("text '" << text << "' why '" << why << "'");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error() == std::errc::invalid_argument);
    CHECK(!why.empty());
    CHECK(why.find(key) != std::string::npos);
    CHECK(why.find('\n') == std::string::npos);
    // Without a why pointer the answer is the same.
    auto r2 = RuntimeConfig::parse(text);
    CHECK_FALSE(r2.ok());
    CHECK(r2.error() == std::errc::invalid_argument);
}

}  // namespace

TEST_CASE("parse of an empty text gives the documented defaults") {
    std::string why;
    auto r = RuntimeConfig::parse("", &why);
    INFO(why);
    REQUIRE(r.ok());
    const RuntimeConfig def{};
    INFO("parsed " << describe(*r) << " vs RuntimeConfig{} " << describe(def));
    CHECK(same(*r, def));
    CHECK(r->fault_threads == 1u);
    CHECK(r->fault_around == (2u << 20));
    CHECK(r->migrate_batch == (4u << 20));
    CHECK(r->engine == migrate::EngineKind::automatic);
}

TEST_CASE("knobs() lists each key once, documented, and each key parses its own default") {
    const auto ks = knobs();
    REQUIRE(!ks.empty());
    std::set<std::string> names;
    for (const auto& k : ks) {
        INFO("knob " << k.name);
        CHECK(!k.name.empty());
        CHECK(!k.doc.empty());
        CHECK(names.insert(std::string(k.name)).second);
    }
    // The keys the header documents.
    for (const char* key : {"arena", "arena_size", "arena_reserve", "engine", "fault_threads", "fault_around",
                            "migrate_batch"}) {
        INFO("key " << key);
        CHECK(names.count(key) == 1);
    }

    const auto def = RuntimeConfig::parse("");
    REQUIRE(def.ok());
    std::string all;
    for (const auto& k : ks) {
        const std::string text = std::string(k.name) + "=" + std::string(k.default_value);
        std::string why;
        auto r = RuntimeConfig::parse(text, &why);
        INFO("'" << text << "': " << why);
        REQUIRE(r.ok());
        // A key set to its documented default is the default.
        INFO("parsed " << describe(*r) << " vs default " << describe(*def));
        CHECK(same(*r, *def));
        if (!all.empty()) all += ",";
        all += text;
    }
    // All of them at once, too.
    std::string why;
    auto r = RuntimeConfig::parse(all, &why);
    INFO("'" << all << "': " << why);
    REQUIRE(r.ok());
    CHECK(same(*r, *def));
}

TEST_CASE("parse applies each key") {
    std::string why;
    auto r = RuntimeConfig::parse(
        "arena=memfd,arena_size=128M,engine=memcpy,fault_threads=3,fault_around=64K,migrate_batch=1M", &why);
    INFO(why);
    REQUIRE(r.ok());
    CHECK(r->arena.backend == devmem::Backend::memfd);
    CHECK(r->arena.size == 128u * 1024 * 1024);
    CHECK(r->engine == migrate::EngineKind::memcpy);
    CHECK(r->fault_threads == 3u);
    CHECK(r->fault_around == 64u * 1024);
    CHECK(r->migrate_batch == 1u * 1024 * 1024);

    // Keys not named keep their defaults (those parse("") gives).
    auto d = RuntimeConfig::parse("fault_threads=2");
    REQUIRE(d.ok());
    const auto defr = RuntimeConfig::parse("");
    REQUIRE(defr.ok());
    const RuntimeConfig& def = *defr;
    CHECK(d->fault_threads == 2u);
    CHECK(d->fault_around == def.fault_around);
    // fault_threads=auto is the default, spelled out.
    auto au = RuntimeConfig::parse("fault_threads=auto");
    REQUIRE(au.ok());
    CHECK(au->fault_threads == 0u);
    CHECK(au->to_string().find("fault_threads=auto") != std::string::npos);
    CHECK(d->migrate_batch == def.migrate_batch);
    CHECK(d->engine == def.engine);
    CHECK(d->arena.size == def.arena.size);

    // fault_around: powers of two from a page to 2M (knobs() documents the bounds).
    for (std::size_t v : {std::size_t{4096}, std::size_t{8192}, std::size_t{1} << 20, std::size_t{2} << 20}) {
        auto f = RuntimeConfig::parse("fault_around=" + std::to_string(v));
        INFO("fault_around=" << v);
        REQUIRE(f.ok());
        CHECK(f->fault_around == v);
    }
    // engine: the names to_string(EngineKind) spells.
    for (auto kind : {migrate::EngineKind::automatic, migrate::EngineKind::uring, migrate::EngineKind::memcpy}) {
        const std::string text = "engine=" + std::string(migrate::to_string(kind));
        std::string w;
        auto e = RuntimeConfig::parse(text, &w);
        INFO(text << ": " << w);
        REQUIRE(e.ok());
        CHECK(e->engine == kind);
    }
}

TEST_CASE("the policy and preload keys: each applied, defaults documented") {
    std::string why;
    auto r = RuntimeConfig::parse("policy=chaos,chaos_period_ms=5,chaos_fraction=0.25,seed=42,tier_hot=64M,"
                                  "min_range=64K,socket=off,log=debug,stats=/tmp/uhmm-%p.json",
                                  &why);
    INFO(why);
    REQUIRE(r.ok());
    CHECK(r->policy.kind == PolicyKind::chaos);
    CHECK(r->policy.chaos_period_ms == 5u);
    CHECK(r->policy.chaos_fraction == 0.25);
    CHECK(r->policy.seed == 42u);
    CHECK(r->policy.tier_hot == 64u << 20);
    CHECK(r->min_range == 64u << 10);
    CHECK(!r->socket);
    CHECK(r->log == "debug");
    CHECK(r->stats == "/tmp/uhmm-%p.json");
    auto again = RuntimeConfig::parse(r->to_string());
    REQUIRE(again.ok());
    CHECK(same(*again, *r));

    auto t = RuntimeConfig::parse("policy=tier,tier_hot=16M");
    REQUIRE(t.ok());
    CHECK(t->policy.kind == PolicyKind::tier);
    CHECK(t->policy.tier_hot == 16u << 20);

    auto d = RuntimeConfig::parse("");
    REQUIRE(d.ok());
    CHECK(d->policy.kind == PolicyKind::none);
    CHECK(d->min_range == 1u << 20);
    CHECK(d->socket);
    CHECK(d->log == "warn");
    CHECK(d->stats.empty());
}

TEST_CASE("bad policy and preload values are EINVAL and why names the key") {
    expect_einval("policy=bogus", "policy");
    expect_einval("chaos_period_ms=0", "chaos_period_ms");
    expect_einval("chaos_period_ms=ten", "chaos_period_ms");
    expect_einval("chaos_fraction=0", "chaos_fraction");
    expect_einval("chaos_fraction=1.5", "chaos_fraction");
    expect_einval("chaos_fraction=half", "chaos_fraction");
    expect_einval("seed=-3", "seed");
    expect_einval("tier_hot=1", "tier_hot");
    expect_einval("min_range=100", "min_range");
    expect_einval("min_range=big", "min_range");
    expect_einval("socket=maybe", "socket");
    expect_einval("log=loud", "log");
}

TEST_CASE("an unknown key is EINVAL and why names it") {
    expect_einval("no_such_knob=1", "no_such_knob");
    expect_einval("fault_threads=2,bogus_key=on", "bogus_key");
    expect_einval("arenasize=64M", "arenasize");
}

TEST_CASE("bad values are EINVAL and why names the key") {
    expect_einval("fault_threads=0", "fault_threads");
    expect_einval("fault_threads=abc", "fault_threads");
    expect_einval("fault_threads=-1", "fault_threads");
    expect_einval("fault_threads=", "fault_threads");
    expect_einval("fault_around=3K", "fault_around");      // not a power of two
    expect_einval("fault_around=6K", "fault_around");      // a page multiple, not a power of two
    expect_einval("fault_around=2048", "fault_around");    // a power of two below a page
    expect_einval("fault_around=0", "fault_around");
    expect_einval("fault_around=xyz", "fault_around");
    expect_einval("arena_size=abc", "arena_size");
    expect_einval("arena=nowhere", "arena");
    expect_einval("engine=foo", "engine");
    expect_einval("engine=", "engine");
    expect_einval("migrate_batch=lots", "migrate_batch");
}

TEST_CASE("a key given twice is EINVAL, not a silent override") {
    expect_einval("fault_threads=2,fault_threads=3", "fault_threads");
}

TEST_CASE("text that is not key=value is EINVAL, never ignored") {
    std::string why;
    auto r = RuntimeConfig::parse("fault_threads", &why);
    INFO(why);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error() == std::errc::invalid_argument);
    CHECK(!why.empty());
}

TEST_CASE("to_string round-trips through parse") {
    const char* texts[] = {
        "",
        "arena=memfd,arena_size=128M,engine=memcpy,fault_threads=3,fault_around=64K,migrate_batch=1M",
        "fault_threads=8,fault_around=4K",
        "fault_threads=auto,fault_around=64K",
        "arena_size=2G,engine=uring,migrate_batch=8M",
    };
    for (const char* text : texts) {
        auto a = RuntimeConfig::parse(text);
        INFO("text '" << text << "'");
        REQUIRE(a.ok());
        const std::string s = a->to_string();
        std::string why;
        auto b = RuntimeConfig::parse(s, &why);
        INFO("to_string '" << s << "' why '" << why << "'");
        REQUIRE(b.ok());
        INFO("a " << describe(*a) << " b " << describe(*b));
        CHECK(same(*a, *b));
        CHECK(b->to_string() == s);
        // It spells every key.
        for (const auto& k : knobs()) {
            INFO("key " << k.name);
            CHECK(s.find(std::string(k.name) + "=") != std::string::npos);
        }
    }
    // A default-constructed config round-trips too.
    const RuntimeConfig def{};
    auto c = RuntimeConfig::parse(def.to_string());
    INFO(def.to_string());
    REQUIRE(c.ok());
    CHECK(same(*c, def));
}
