// hmmctl run's summary: what the runtime counted in CMD (and in the
// programs CMD started, each of which writes its own statistics), on one
// screen of stderr when CMD ends.
//
// Several processes: counters are summed; latencies and the arena's figures
// are each process's own, so the summary shows the largest.
#include <dirent.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "format.hpp"
#include "printable.hpp"
#include "run.hpp"

namespace hmmctl {

namespace {

std::optional<nlohmann::json> read_json(const std::string& path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::stringstream text;
    text << in.rdbuf();
    auto j = nlohmann::json::parse(text.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    return j;
}

std::string expand_pid(const std::string& pattern, pid_t pid) {
    std::string out;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        if (pattern[i] == '%' && i + 1 < pattern.size() && pattern[i + 1] == 'p') {
            out += std::to_string(pid);
            ++i;
        } else if (pattern[i] == '%' && i + 1 < pattern.size() && pattern[i + 1] == '%') {
            out += '%';
            ++i;
        } else {
            out += pattern[i];
        }
    }
    return out;
}

bool taken_as_largest(const std::string& key) {
    return key == "pid" || key.rfind("arena_", 0) == 0 ||
           (key.size() > 3 && key.compare(key.size() - 3, 3, "_ns") == 0);
}

// Every process's statistics in one object (see the file's comment).
nlohmann::json combined(const std::vector<nlohmann::json>& stats) {
    nlohmann::json out = stats.front();
    for (std::size_t i = 1; i < stats.size(); ++i) {
        for (const auto& [key, value] : stats[i].items()) {
            if (!value.is_number_integer() || key == "pid") continue;
            const auto a = number_or(out, key.c_str(), 0), b = number_or(stats[i], key.c_str(), 0);
            out[key] = taken_as_largest(key) ? std::max(a, b) : a + b;
        }
    }
    return out;
}

std::string pages(const nlohmann::json& s, const char* pages, const char* bytes) {
    return field(s, pages) + " pages (" + field_bytes(s, bytes) + ")";
}

std::string latency(const nlohmann::json& s, const char* key) {
    const auto it = s.find(key);
    return it == s.end() || !it->is_number_integer() ? "-" : human_ns(it->get<std::uint64_t>());
}

std::string how_it_ended(const RunEnd& end) {
    const std::string name = end.command.empty() ? "?" : printable(end.command.front());
    if (end.signal)
        return name + " was killed by signal " + std::to_string(end.signal) + " (" + strsignal(end.signal) + ")";
    return name + " exited with status " + std::to_string(end.exit_status);
}

}  // namespace

std::vector<nlohmann::json> read_stats(const std::string& pattern, pid_t pid, const std::string& files_in_dir) {
    std::vector<nlohmann::json> out;
    if (files_in_dir.empty()) {
        if (auto j = read_json(expand_pid(pattern, pid))) out.push_back(std::move(*j));
        return out;
    }
    // CMD's own file first, then its children's.
    if (auto j = read_json(expand_pid(pattern, pid))) out.push_back(std::move(*j));
    DIR* d = ::opendir(files_in_dir.c_str());
    if (!d) return out;
    const std::string own = "uhmm-" + std::to_string(pid) + ".json";
    while (const dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name == own || name.rfind("uhmm-", 0) != 0 || name.size() < 5 ||
            name.compare(name.size() - 5, 5, ".json") != 0)
            continue;
        if (auto j = read_json(files_in_dir + "/" + name)) out.push_back(std::move(*j));
    }
    ::closedir(d);
    return out;
}

void print_summary(const RunEnd& end, bool json) {
    if (json) {
        nlohmann::json j{{"command", end.command}, {"pid", end.pid},     {"exit_status", end.exit_status},
                         {"signal", end.signal},   {"seconds", end.seconds}, {"processes", end.stats.size()}};
        j["stats"] = end.stats.empty() ? nlohmann::json() : combined(end.stats);
        std::fprintf(stderr, "%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        return;
    }
    std::fprintf(stderr, "hmmctl: %s after %s s\n", how_it_ended(end).c_str(), fixed(end.seconds, 2).c_str());
    if (end.stats.empty()) {
        std::fprintf(stderr, "  no statistics from uhmm: %s\n",
                     end.signal ? "a process killed by a signal writes none"
                                : "the runtime did not start (a 'uhmm:' line above says why), or CMD ended "
                                  "without running its exit handlers (_exit)");
        return;
    }
    const auto s = combined(end.stats);
    std::vector<std::pair<std::string, std::string>> lines{
        {"to device", pages(s, "pages_to_device", "bytes_to_device")},
        {"to host", pages(s, "pages_to_host", "bytes_to_host") + ", " + field(s, "pages_to_host_on_fault") +
                        " on faults"},
        {"faults", field(s, "faults") + " (missing " + field(s, "faults_missing") + ", wp " + field(s, "faults_wp") +
                       "; first touch " + field(s, "first_touch_faults") + ", device " + field(s, "device_faults") +
                       ")"},
        {"fault service", "p50 " + latency(s, "fault_p50_ns") + ", p99 " + latency(s, "fault_p99_ns")},
        {"copy batches", field(s, "copy_batches")},
        {"arena", arena_use(s)},
        {"policy", field(s, "policy") + ": " + field(s, "policy_rounds") + " rounds, " + field(s, "migrations") +
                       " migrations"},
    };
    if (end.stats.size() > 1)
        lines.push_back({"processes", std::to_string(end.stats.size()) + " ran under uhmm (counters summed)"});
    for (const auto& [k, v] : lines) std::fprintf(stderr, "  %-14s %s\n", k.c_str(), v.c_str());
}

}  // namespace hmmctl
