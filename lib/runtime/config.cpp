// The runtime's configuration keys (UHMM_CONF uses the same ones): one table
// of knobs, one parser, one printer.
#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <uhmm/runtime.hpp>

namespace uhmm {

namespace {

constexpr std::array kKnobs = {
    Knob{"arena", "memfd", "",
         "device memory: memfd (shmem, needs no setup), hugepage (MFD_HUGETLB, falls back to THP/plain memfd), "
         "numa:NODE, cuda:DEVICE"},
    Knob{"arena_size", "1G", "bytes", "most device memory the arena may hold (K/M/G/T suffixes, whole 2M chunks)"},
    Knob{"arena_reserve", "off", "on|off", "hugepage arena: reserve the huge pages it needs (root)"},
    Knob{"engine", "auto", "", "copy engine: auto, io_uring, memcpy, cuda"},
    Knob{"fault_threads", "1", "threads",
         "userfaultfd reader threads: 1-64 (placed by the scheduler) or auto (one kept on each CPU, at most 8)"},
    Knob{"fault_around", "2M", "bytes",
         "most a CPU fault brings home at once (power of two, 4K-2M); grows from 4K while faults walk in order"},
    Knob{"migrate_batch", "4M", "bytes", "pages frozen, copied and zapped per step of a migration to the device"},
    Knob{"policy", "none", "", "what moves pages unasked: none, chaos, tier"},
    Knob{"chaos_period_ms", "100", "ms", "chaos: how often a round of migrations starts (1-3600000)"},
    Knob{"chaos_fraction", "0.1", "0-1", "chaos: the fraction of host-resident managed pages each round moves"},
    Knob{"seed", "1", "", "chaos: the random seed (a round's choice of pages is reproducible)"},
    Knob{"tier_hot", "256M", "bytes", "tier: managed memory allowed on the host"},
    Knob{"min_range", "1M", "bytes", "preload: allocations and private anonymous mmaps this big or bigger are managed"},
    Knob{"socket", "on", "on|off", "the control socket hmmctl talks to"},
    Knob{"log", "warn", "", "log level: off, error, warn, info, debug"},
    Knob{"stats", "", "path", "JSON statistics written at exit (%p: the process id); empty: none"},
};

std::error_code bad(std::string* why, std::string text) {
    if (why) *why = std::move(text);
    return errno_code(EINVAL);
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

std::string known_keys() {
    std::string out;
    for (const auto& k : kKnobs) out += (out.empty() ? "" : ", ") + std::string(k.name);
    return out;
}

bool is_power_of_two(std::size_t v) { return v && !(v & (v - 1)); }

std::optional<bool> on_off(const std::string& v) {
    if (v == "on" || v == "true" || v == "yes" || v == "1") return true;
    if (v == "off" || v == "false" || v == "no" || v == "0") return false;
    return std::nullopt;
}

template <class T>
std::optional<T> whole_number(const std::string& v) {
    T n{};
    const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc{} || ptr != v.data() + v.size() || v.empty()) return std::nullopt;
    return n;
}

}  // namespace

std::span<const Knob> knobs() { return kKnobs; }

Result<PolicyConfig> parse_policy_spec(std::string_view spec, const PolicyConfig& base, std::string* why) {
    static constexpr std::string_view kPolicyKeys[] = {"policy", "chaos_period_ms", "chaos_fraction", "seed",
                                                       "tier_hot"};
    std::string text;
    std::vector<std::string> keys;
    bool first = true;
    for (std::string_view rest = spec; !rest.empty() || first; first = false) {
        const auto comma = rest.find(',');
        std::string item(trim(rest.substr(0, comma)));
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        if (item.empty()) continue;
        if (first && item.find('=') == std::string::npos) item = "policy=" + item;   // the name alone
        const std::string key(trim(std::string_view(item).substr(0, item.find('='))));
        if (std::find(std::begin(kPolicyKeys), std::end(kPolicyKeys), key) == std::end(kPolicyKeys))
            return bad(why, "policy spec: '" + key +
                                "' is not a policy knob (policy, chaos_period_ms, chaos_fraction, seed, tier_hot)");
        keys.push_back(key);
        text += (text.empty() ? "" : ",") + item;
    }
    if (keys.empty()) return bad(why, "policy spec: empty (e.g. tier,tier_hot=64M)");
    auto parsed = RuntimeConfig::parse(text, why);
    if (!parsed) return parsed.error();
    const PolicyConfig& p = parsed->policy;
    PolicyConfig out = base;
    auto given = [&](std::string_view k) { return std::find(keys.begin(), keys.end(), k) != keys.end(); };
    if (given("policy")) out.kind = p.kind;
    if (given("chaos_period_ms")) out.chaos_period_ms = p.chaos_period_ms;
    if (given("chaos_fraction")) out.chaos_fraction = p.chaos_fraction;
    if (given("seed")) out.seed = p.seed;
    if (given("tier_hot")) out.tier_hot = p.tier_hot;
    return out;
}

Result<RuntimeConfig> RuntimeConfig::parse(std::string_view text, std::string* why) {
    // Collect first (so that arena, arena_size and arena_reserve combine), in
    // the table's order; a key given twice is an error, not a silent override.
    std::map<std::string, std::string, std::less<>> given;
    while (!text.empty()) {
        const auto comma = text.find(',');
        const auto item = trim(text.substr(0, comma));
        text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
        if (item.empty()) continue;
        const auto eq = item.find('=');
        if (eq == std::string_view::npos)
            return bad(why, "UHMM_CONF: '" + std::string(item) + "' is not key=value (keys: " + known_keys() + ")");
        const std::string key(trim(item.substr(0, eq)));
        const std::string value(trim(item.substr(eq + 1)));
        if (std::none_of(kKnobs.begin(), kKnobs.end(), [&](const Knob& k) { return k.name == key; }))
            return bad(why, "UHMM_CONF: unknown key '" + key + "' (keys: " + known_keys() + ")");
        if (!given.emplace(key, value).second) return bad(why, "UHMM_CONF: key '" + key + "' given twice");
    }
    auto value_of = [&](std::string_view key) {
        auto it = given.find(key);
        if (it != given.end()) return it->second;
        for (const auto& k : kKnobs)
            if (k.name == key) return std::string(k.default_value);
        return std::string();
    };

    RuntimeConfig c;
    const std::string reserve = value_of("arena_reserve");
    const auto reserve_on = on_off(reserve);
    if (!reserve_on) return bad(why, "UHMM_CONF: arena_reserve='" + reserve + "': expected on or off");
    auto spec = devmem::parse_arena_spec(value_of("arena"), value_of("arena_size"), *reserve_on, why);
    if (!spec) return spec.error();
    c.arena = *spec;

    const std::string engine = value_of("engine");
    if (engine == "auto" || engine == "automatic") c.engine = migrate::EngineKind::automatic;
    else if (engine == "io_uring" || engine == "uring") c.engine = migrate::EngineKind::uring;
    else if (engine == "memcpy") c.engine = migrate::EngineKind::memcpy;
    else if (engine == "cuda") c.engine = migrate::EngineKind::cuda;
    else return bad(why, "UHMM_CONF: engine='" + engine + "': expected auto, io_uring, memcpy or cuda");

    const std::string threads = value_of("fault_threads");
    unsigned n = 0;
    if (threads != "auto") {
        const auto [ptr, ec] = std::from_chars(threads.data(), threads.data() + threads.size(), n);
        if (ec != std::errc{} || ptr != threads.data() + threads.size() || n < 1 || n > 64)
            return bad(why, "UHMM_CONF: fault_threads='" + threads + "': expected auto or a number from 1 to 64");
    }
    c.fault_threads = n;

    const std::string around = value_of("fault_around");
    auto fa = devmem::parse_size(around);
    if (!fa || *fa < devmem::kPageSize || *fa > devmem::kChunkSize || !is_power_of_two(*fa))
        return bad(why, "UHMM_CONF: fault_around='" + around + "': expected a power of two from 4K to 2M");
    c.fault_around = *fa;

    const std::string batch = value_of("migrate_batch");
    auto mb = devmem::parse_size(batch);
    if (!mb || *mb < devmem::kPageSize || *mb % devmem::kPageSize || *mb > (std::size_t{1} << 30))
        return bad(why, "UHMM_CONF: migrate_batch='" + batch + "': expected a multiple of 4K from 4K to 1G");
    c.migrate_batch = *mb;

    const std::string policy = value_of("policy");
    if (policy == "none") c.policy.kind = PolicyKind::none;
    else if (policy == "chaos") c.policy.kind = PolicyKind::chaos;
    else if (policy == "tier") c.policy.kind = PolicyKind::tier;
    else return bad(why, "UHMM_CONF: policy='" + policy + "': expected none, chaos or tier");

    const std::string period = value_of("chaos_period_ms");
    const auto ms = whole_number<unsigned>(period);
    if (!ms || *ms < 1 || *ms > 3600000)
        return bad(why, "UHMM_CONF: chaos_period_ms='" + period + "': expected milliseconds from 1 to 3600000");
    c.policy.chaos_period_ms = *ms;

    const std::string fraction = value_of("chaos_fraction");
    double f = 0;
    const auto [fptr, fec] = std::from_chars(fraction.data(), fraction.data() + fraction.size(), f);
    if (fec != std::errc{} || fptr != fraction.data() + fraction.size() || fraction.empty() || !(f > 0 && f <= 1))
        return bad(why, "UHMM_CONF: chaos_fraction='" + fraction + "': expected a number above 0 and at most 1");
    c.policy.chaos_fraction = f;

    const std::string seed = value_of("seed");
    const auto sd = whole_number<std::uint64_t>(seed);
    if (!sd) return bad(why, "UHMM_CONF: seed='" + seed + "': expected a whole number from 0 to 2^64-1");
    c.policy.seed = *sd;

    const std::string hot = value_of("tier_hot");
    auto th = devmem::parse_size(hot);
    if (!th || *th < devmem::kPageSize)
        return bad(why, "UHMM_CONF: tier_hot='" + hot + "': expected a size of at least 4K (K/M/G/T suffixes)");
    c.policy.tier_hot = *th;

    const std::string min_range = value_of("min_range");
    auto mr = devmem::parse_size(min_range);
    if (!mr || *mr < devmem::kPageSize || *mr > (std::size_t{1} << 46))
        return bad(why, "UHMM_CONF: min_range='" + min_range + "': expected a size from 4K to 64T (K/M/G/T suffixes)");
    c.min_range = *mr;

    const std::string socket = value_of("socket");
    const auto sock = on_off(socket);
    if (!sock) return bad(why, "UHMM_CONF: socket='" + socket + "': expected on or off");
    c.socket = *sock;

    const std::string log = value_of("log");
    if (log != "off" && log != "error" && log != "warn" && log != "info" && log != "debug")
        return bad(why, "UHMM_CONF: log='" + log + "': expected off, error, warn, info or debug");
    c.log = log;

    c.stats = value_of("stats");
    return c;
}

std::string RuntimeConfig::to_string() const {
    char fraction[32];
    // The shortest spelling that reads back as the same double.
    const auto fr = std::to_chars(fraction, fraction + sizeof fraction - 1, policy.chaos_fraction);
    *fr.ptr = '\0';
    return devmem::to_string(arena) + ",engine=" + std::string(migrate::to_string(engine)) +
           ",fault_threads=" + (fault_threads ? std::to_string(fault_threads) : std::string("auto")) + ",fault_around=" + devmem::format_size(fault_around) +
           ",migrate_batch=" + devmem::format_size(migrate_batch) + ",policy=" + std::string(uhmm::to_string(policy.kind)) +
           ",chaos_period_ms=" + std::to_string(policy.chaos_period_ms) + ",chaos_fraction=" + fraction +
           ",seed=" + std::to_string(policy.seed) + ",tier_hot=" + devmem::format_size(policy.tier_hot) +
           ",min_range=" + devmem::format_size(min_range) + ",socket=" + (socket ? "on" : "off") + ",log=" + log +
           ",stats=" + stats;
}

std::string_view to_string(PolicyKind k) noexcept {
    switch (k) {
        case PolicyKind::none: return "none";
        case PolicyKind::chaos: return "chaos";
        case PolicyKind::tier: return "tier";
    }
    return "?";
}

const char* to_string(PageState s) noexcept {
    switch (s) {
        case PageState::none: return "none";
        case PageState::host: return "host";
        case PageState::migrating: return "migrating";
        case PageState::device: return "device";
    }
    return "?";
}

}  // namespace uhmm
