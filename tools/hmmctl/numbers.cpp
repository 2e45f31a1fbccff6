// Command-line numbers (see the header). One scanner for all of them, with
// overflow checked at every digit and at the suffix, so that a value that
// does not fit is an error and never wraps around.
#include "numbers.hpp"

#include <climits>

namespace hmmctl {

namespace {

int digit_value(char c, unsigned base) {
    int v = -1;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    return v >= 0 && static_cast<unsigned>(v) < base ? v : -1;
}

unsigned suffix_shift(char c) {
    switch (c) {
        case 'k': case 'K': return 10;
        case 'm': case 'M': return 20;
        case 'g': case 'G': return 30;
        case 't': case 'T': return 40;
        default: return 0;
    }
}

std::string quoted(std::string_view text) { return "'" + std::string(text) + "'"; }

bool refuse(std::string* why, std::string text) {
    if (why) *why = std::move(text);
    return false;
}

// Decimal or 0x hex digits, then (when `suffixes`) one K/M/G/T. The value
// goes to `out`; false with `*why` set otherwise.
bool scan(std::string_view text, std::string_view what, bool suffixes, std::uint64_t& out, std::string* why) {
    const std::string accepted = suffixes ? "a number (decimal or 0x hex) with an optional K, M, G or T"
                                          : "a number (decimal or 0x hex)";
    if (text.empty()) return refuse(why, std::string(what) + " is empty: expected " + accepted);
    std::string_view digits = text;
    unsigned base = 10;
    if (digits.size() >= 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
        base = 16;
        digits.remove_prefix(2);
    }
    unsigned shift = 0;
    if (suffixes && !digits.empty() && suffix_shift(digits.back()) != 0 &&
        (base == 10 || digit_value(digits.back(), 16) < 0)) {
        shift = suffix_shift(digits.back());
        digits.remove_suffix(1);
    }
    if (digits.empty())
        return refuse(why, std::string(what) + " " + quoted(text) + " has no digits: expected " + accepted);
    std::uint64_t value = 0;
    for (char c : digits) {
        const int d = digit_value(c, base);
        if (d < 0) return refuse(why, std::string(what) + " " + quoted(text) + " is not " + accepted);
        if (__builtin_mul_overflow(value, std::uint64_t{base}, &value) ||
            __builtin_add_overflow(value, static_cast<std::uint64_t>(d), &value))
            return refuse(why, std::string(what) + " " + quoted(text) + " is too large (the most is 2^64-1)");
    }
    if (shift != 0 && value > (UINT64_MAX >> shift))
        return refuse(why, std::string(what) + " " + quoted(text) + " is too large (the most is 2^64-1)");
    out = value << shift;
    return true;
}

}  // namespace

std::optional<std::uint64_t> parse_address(std::string_view text, std::string_view what, std::string* why) {
    std::uint64_t v = 0;
    if (!scan(text, what, false, v, why)) return std::nullopt;
    return v;
}

std::optional<std::uint64_t> parse_length(std::string_view text, std::string_view what, std::string* why) {
    std::uint64_t v = 0;
    if (!scan(text, what, true, v, why)) return std::nullopt;
    return v;
}

std::optional<pid_t> parse_pid(std::string_view text, std::string* why) {
    const std::string accepted = "expected a process id (a decimal number from 1 to 2147483647)";
    if (text.empty()) {
        refuse(why, "PID is empty: " + accepted);
        return std::nullopt;
    }
    std::uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9' || (v = v * 10 + static_cast<unsigned>(c - '0')) > INT_MAX) {
            refuse(why, "PID " + quoted(text) + ": " + accepted);
            return std::nullopt;
        }
    }
    if (v == 0) {
        refuse(why, "PID " + quoted(text) + ": " + accepted);
        return std::nullopt;
    }
    return static_cast<pid_t>(v);
}

}  // namespace hmmctl
