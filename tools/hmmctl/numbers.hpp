// The numbers hmmctl reads from its command line: process ids, addresses
// (decimal or 0x hex) and lengths (the same, with an optional K, M, G or T:
// binary multiples). Anything else — signs, spaces, fractions, empty
// strings, trailing garbage, values over 2^64-1 — is refused with a line
// that names the argument and says what is accepted.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hmmctl {

// `what` names the argument in the message ("ADDR", "LEN").
std::optional<std::uint64_t> parse_address(std::string_view text, std::string_view what, std::string* why);
std::optional<std::uint64_t> parse_length(std::string_view text, std::string_view what, std::string* why);
// A decimal process id from 1 to 2^31-1.
std::optional<pid_t> parse_pid(std::string_view text, std::string* why);

}  // namespace hmmctl
