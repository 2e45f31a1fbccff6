// Formatting for people (see the header).
#include "format.hpp"

#include <algorithm>
#include <cinttypes>

#include "printable.hpp"

namespace hmmctl {

std::string fixed(double value, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
    return buf;
}

std::string count_of(std::uint64_t n, const char* noun) {
    return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

std::string human_bytes(std::uint64_t bytes) {
    static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) return std::to_string(bytes) + " B";
    double v = static_cast<double>(bytes);
    int unit = 0;
    while (v >= 1024 && unit < 6) {
        v /= 1024;
        ++unit;
    }
    return fixed(v, 1) + " " + kUnits[unit];
}

std::string hex(std::uint64_t value) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%" PRIx64, value);
    return buf;
}

std::string human_ns(std::uint64_t ns) {
    if (ns < 1000) return std::to_string(ns) + " ns";
    if (ns < 1000000) return fixed(static_cast<double>(ns) / 1e3, 1) + " us";
    if (ns < 1000000000) return fixed(static_cast<double>(ns) / 1e6, 1) + " ms";
    return fixed(static_cast<double>(ns) / 1e9, 2) + " s";
}

std::string field(const nlohmann::json& j, const char* key) {
    const auto it = j.find(key);
    if (it == j.end()) return "-";
    if (it->is_number_unsigned()) return std::to_string(it->get<std::uint64_t>());
    if (it->is_number_integer()) return std::to_string(it->get<std::int64_t>());
    if (it->is_number_float()) return fixed(it->get<double>(), 3);
    if (it->is_string()) return it->get<std::string>();
    return "-";
}

std::uint64_t number_or(const nlohmann::json& j, const char* key, std::uint64_t otherwise) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) return otherwise;
    if (it->is_number_unsigned()) return it->get<std::uint64_t>();
    const auto v = it->get<std::int64_t>();
    return v < 0 ? otherwise : static_cast<std::uint64_t>(v);
}

std::string field_bytes(const nlohmann::json& j, const char* key) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) return "-";
    return human_bytes(it->get<std::uint64_t>());
}

std::string arena_use(const nlohmann::json& s) {
    std::string text = field_bytes(s, "arena_used_bytes") + " used of " + field_bytes(s, "arena_limit_bytes");
    if (s.contains("arena_high_water_bytes")) text += " (peak " + field_bytes(s, "arena_high_water_bytes") + ")";
    return text;
}

Table::Table(std::vector<std::string> header, std::vector<bool> right) : right_(std::move(right)) {
    right_.resize(header.size(), false);
    rows_.push_back(std::move(header));
}

void Table::add(std::vector<std::string> row) {
    row.resize(rows_.front().size());
    for (auto& cell : row) cell = printable(cell);   // one row stays one line
    rows_.push_back(std::move(row));
}

void Table::print(std::FILE* out) const {
    std::vector<std::size_t> width(rows_.front().size(), 0);
    for (const auto& row : rows_)
        for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
    const bool headless = std::all_of(rows_.front().begin(), rows_.front().end(),
                                      [](const std::string& h) { return h.empty(); });
    for (const auto& row : rows_) {
        if (headless && &row == &rows_.front()) continue;
        std::string line;
        for (std::size_t c = 0; c < row.size(); ++c) {
            const bool last = c + 1 == row.size();
            const std::string pad(width[c] - row[c].size(), ' ');
            if (right_[c]) line += pad + row[c];
            else line += row[c] + (last ? "" : pad);
            if (!last) line += "  ";
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        std::fprintf(out, "%s\n", line.c_str());
    }
}

void print_json(const nlohmann::json& j) {
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    std::fflush(stdout);
}

nlohmann::json without_envelope(nlohmann::json reply) {
    if (reply.is_object()) {
        reply.erase("ok");
        reply.erase("id");
    }
    return reply;
}

}  // namespace hmmctl
