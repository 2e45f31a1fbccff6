// How hmmctl prints for people: sizes in binary units, addresses in hex,
// durations, and tables whose columns line up. (--json output is the
// protocol's objects, printed as they are.)
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace hmmctl {

std::string human_bytes(std::uint64_t bytes);        // "512 B", "4.0 KiB", "1.5 GiB"
std::string hex(std::uint64_t value);                // "0x7f3a00000000"
std::string human_ns(std::uint64_t ns);              // "850 ns", "12.3 us", "4.1 ms", "2.00 s"
std::string fixed(double value, int decimals);       // "%.*f"
std::string count_of(std::uint64_t n, const char* noun);   // "1 range", "3 ranges"

// A number from a JSON object as text; "-" when the key is missing or not a
// number (a server without it), so a gap shows instead of a false zero.
std::string field(const nlohmann::json& j, const char* key);
std::string field_bytes(const nlohmann::json& j, const char* key);
// "12.0 MiB used of 1.0 GiB (peak 40.0 MiB)" from a statistics object.
std::string arena_use(const nlohmann::json& stats);
std::uint64_t number_or(const nlohmann::json& j, const char* key, std::uint64_t otherwise);

// Columns aligned with two spaces between them; the header row first (not
// printed when every heading is empty). Control characters in cells are
// escaped (printable.hpp), so that each row is one line.
// Columns named in `right` are right-aligned (numbers).
class Table {
public:
    explicit Table(std::vector<std::string> header, std::vector<bool> right = {});
    void add(std::vector<std::string> row);
    void print(std::FILE* out) const;
    bool empty() const { return rows_.size() <= 1; }

private:
    std::vector<std::vector<std::string>> rows_;
    std::vector<bool> right_;
};

// One JSON object on one line of stdout (what --json prints).
void print_json(const nlohmann::json& j);
// The reply without the protocol's own keys ("ok", "id").
nlohmann::json without_envelope(nlohmann::json reply);

}  // namespace hmmctl
