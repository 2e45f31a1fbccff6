// Parsing and printing arena specs (UHMM_CONF arena=, arena_size=, arena_reserve=).
//
// The configuration layer hands the raw values here, so that the one-line
// errors (naming the key and what it accepts) are written once, next to the
// backends they describe. Sizes are rounded up to whole 2 MiB chunks, the
// arena's growth unit; to_string() prints the effective values.
#include <uhmm/devmem.hpp>

#include <charconv>
#include <optional>
#include <limits>

namespace uhmm::devmem {

namespace {

// Page indices are 32-bit: 2^32 pages of 4 KiB.
constexpr std::size_t kMaxSize = std::size_t{1} << 44;   // 16 TiB

std::error_code fail(std::string* why, std::string text) {
    if (why) *why = std::move(text);
    return errno_code(EINVAL);
}

std::string quoted(std::string_view key, std::string_view value) {
    return std::string(key) + "=" + std::string(value);
}

// "numa:3" → 3; nullopt unless the rest is a plain decimal number.
std::optional<int> index_after(std::string_view text, std::string_view prefix) {
    if (text.substr(0, prefix.size()) != prefix) return std::nullopt;
    const auto digits = text.substr(prefix.size());
    int value = 0;
    const auto* end = digits.data() + digits.size();
    const auto [ptr, ec] = std::from_chars(digits.data(), end, value);
    if (digits.empty() || ec != std::errc{} || ptr != end || value < 0) return std::nullopt;
    return value;
}

}  // namespace

std::string format_size(std::size_t bytes) {
    constexpr const char* units[] = {"", "K", "M", "G", "T"};
    int u = 0;
    while (u < 4 && bytes >= 1024 && bytes % 1024 == 0) {
        bytes /= 1024;
        ++u;
    }
    return std::to_string(bytes) + units[u];
}

const char* to_string(Backend b) noexcept {
    switch (b) {
    case Backend::hugepage: return "hugepage";
    case Backend::memfd: return "memfd";
    case Backend::numa: return "numa";
    case Backend::cuda: return "cuda";
    }
    return "?";
}

Result<std::size_t> parse_size(std::string_view text) {
    if (text.empty()) return errno_code(EINVAL);
    std::size_t shift = 0;
    switch (text.back()) {
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    case 't': case 'T': shift = 40; break;
    default: break;
    }
    const auto digits = shift ? text.substr(0, text.size() - 1) : text;
    std::size_t value = 0;
    const auto* end = digits.data() + digits.size();
    const auto [ptr, ec] = std::from_chars(digits.data(), end, value);
    if (digits.empty() || ec != std::errc{} || ptr != end) return errno_code(EINVAL);
    if (value > (std::numeric_limits<std::size_t>::max() >> shift)) return errno_code(ERANGE);
    return value << shift;
}

Result<ArenaSpec> parse_arena_spec(std::string_view arena, std::string_view size, bool reserve,
                                   std::string* why) {
    ArenaSpec spec;
    if (arena == "hugepage") {
        spec.backend = Backend::hugepage;
    } else if (arena == "memfd") {
        spec.backend = Backend::memfd;
    } else if (auto node = index_after(arena, "numa:")) {
        spec.backend = Backend::numa;
        spec.index = *node;
    } else if (auto dev = index_after(arena, "cuda:")) {
        spec.backend = Backend::cuda;
        spec.index = *dev;
    } else {
        return fail(why, quoted("arena", arena) +
                             ": unknown backend; accepted: hugepage, memfd, numa:NODE, cuda:DEVICE "
                             "(NODE and DEVICE are numbers, e.g. numa:0)");
    }

    const auto bytes = parse_size(size);
    if (!bytes) {
        return fail(why, quoted("arena_size", size) +
                             ": bad size; accepted: a number of bytes with an optional K, M, G or T "
                             "suffix (e.g. 512M)");
    }
    if (*bytes < kChunkSize || *bytes > kMaxSize) {
        return fail(why, quoted("arena_size", size) + ": out of range; accepted: 2M (one chunk) to 16T");
    }
    spec.size = (*bytes + kChunkSize - 1) / kChunkSize * kChunkSize;

    if (reserve && spec.backend != Backend::hugepage) {
        return fail(why, "arena_reserve=on: only applies to arena=hugepage (arena=" +
                             std::string(arena) + ")");
    }
    spec.reserve = reserve;
    return spec;
}

std::string to_string(const ArenaSpec& spec) {
    std::string arena = to_string(spec.backend);
    if (spec.backend == Backend::numa || spec.backend == Backend::cuda) {
        arena += ":" + std::to_string(spec.index);
    }
    return "arena=" + arena + ",arena_size=" + format_size(spec.size) +
           ",arena_reserve=" + (spec.reserve ? "on" : "off");
}

}  // namespace uhmm::devmem
