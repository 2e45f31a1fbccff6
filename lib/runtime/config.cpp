// The runtime's configuration keys (UHMM_CONF uses the same ones): one table
// of knobs, one parser, one printer.
#include <algorithm>
#include <array>
#include <charconv>
#include <map>
#include <string>

#include <uhmm/runtime.hpp>

namespace uhmm {

namespace {

constexpr std::array kKnobs = {
    Knob{"arena", "hugepage", "",
         "device memory: hugepage (MFD_HUGETLB, falls back to THP/plain memfd), memfd, numa:NODE, cuda:DEVICE"},
    Knob{"arena_size", "1G", "bytes", "most device memory the arena may hold (K/M/G/T suffixes, whole 2M chunks)"},
    Knob{"arena_reserve", "off", "on|off", "hugepage arena: reserve the huge pages it needs (root)"},
    Knob{"engine", "auto", "", "copy engine: auto, io_uring, memcpy, cuda"},
    Knob{"fault_threads", "1", "threads", "userfaultfd reader threads (1-64)"},
    Knob{"fault_around", "2M", "bytes",
         "most a CPU fault brings home at once (power of two, 4K-2M); grows from 4K while faults walk in order"},
    Knob{"migrate_batch", "4M", "bytes", "pages frozen, copied and zapped per step of a migration to the device"},
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

}  // namespace

std::span<const Knob> knobs() { return kKnobs; }

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
    bool reserve_on = false;
    if (reserve == "on" || reserve == "true" || reserve == "yes" || reserve == "1") reserve_on = true;
    else if (!(reserve == "off" || reserve == "false" || reserve == "no" || reserve == "0"))
        return bad(why, "UHMM_CONF: arena_reserve='" + reserve + "': expected on or off");
    auto spec = devmem::parse_arena_spec(value_of("arena"), value_of("arena_size"), reserve_on, why);
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
    const auto [ptr, ec] = std::from_chars(threads.data(), threads.data() + threads.size(), n);
    if (ec != std::errc{} || ptr != threads.data() + threads.size() || n < 1 || n > 64)
        return bad(why, "UHMM_CONF: fault_threads='" + threads + "': expected a number from 1 to 64");
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
    return c;
}

std::string RuntimeConfig::to_string() const {
    return devmem::to_string(arena) + ",engine=" + std::string(migrate::to_string(engine)) +
           ",fault_threads=" + std::to_string(fault_threads) + ",fault_around=" + devmem::format_size(fault_around) +
           ",migrate_batch=" + devmem::format_size(migrate_batch);
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
