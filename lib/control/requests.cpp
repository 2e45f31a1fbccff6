// The control protocol's requests (see the header and docs/CONTROL.md).
#include "control/requests.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

namespace uhmm::control {

using nlohmann::json;

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kPiece = 64u << 20;              // migrate moves this much between progress lines
constexpr std::uint64_t kAddressLimit = 1ull << 57;      // beyond any user address (5-level paging)
constexpr int kProtocol = 1;
constexpr const char* kVersion = "0.1.0";

// An error the request earns: the protocol's code and one line for people.
struct Refusal {
    std::string code, message;
};

std::string errno_name(const std::error_code& ec) {
    if (ec.category() == std::generic_category() || ec.category() == std::system_category())
        if (const char* n = ::strerrorname_np(ec.value())) return n;
    return "EIO";
}

std::string hex(std::uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

std::string command_line() {
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::string text(std::istreambuf_iterator<char>(in), {});
    while (!text.empty() && text.back() == '\0') text.pop_back();
    std::replace(text.begin(), text.end(), '\0', ' ');
    if (text.size() > 256) text.resize(256);
    return text;
}

// A non-negative integer field, or the refusal that says what is wrong.
std::uint64_t unsigned_field(const json& req, const char* key) {
    const auto it = req.find(key);
    if (it == req.end()) throw Refusal{"BAD_REQUEST", std::string("'") + key + "' is missing"};
    if (it->is_number_unsigned()) return it->get<std::uint64_t>();
    if (it->is_number_integer()) throw Refusal{"EINVAL", std::string("'") + key + "' is negative"};
    throw Refusal{"BAD_REQUEST", std::string("'") + key + "' must be an integer (bytes)"};
}

std::string string_field(const json& req, const char* key) {
    const auto it = req.find(key);
    if (it == req.end()) throw Refusal{"BAD_REQUEST", std::string("'") + key + "' is missing"};
    if (!it->is_string()) throw Refusal{"BAD_REQUEST", std::string("'") + key + "' must be a string"};
    return it->get<std::string>();
}

json hello(Runtime& rt) {
    std::uint64_t by_state[4] = {};
    const auto ranges = rt.ranges();
    std::uint64_t managed = 0;
    for (const auto& r : ranges) {
        managed += r.len;
        for (int s = 0; s < 4; ++s) by_state[s] += r.pages[s] * kPage;
    }
    RuntimeConfig c = rt.config();
    c.policy = rt.policy();
    return {{"protocol", kProtocol},
            {"version", kVersion},
            {"pid", ::getpid()},
            {"uid", ::getuid()},
            {"command", command_line()},
            {"policy", std::string(to_string(c.policy.kind))},
            {"managed_bytes", managed},
            {"host_bytes", by_state[static_cast<int>(PageState::host)]},
            {"device_bytes", by_state[static_cast<int>(PageState::device)]},
            {"ranges", ranges.size()},
            {"config", c.to_string()}};
}

json ranges(Runtime& rt) {
    json list = json::array();
    for (const auto& r : rt.ranges()) {
        list.push_back({{"start", r.start},
                        {"end", r.start + r.len},
                        {"none_pages", r.pages[static_cast<int>(PageState::none)]},
                        {"host_pages", r.pages[static_cast<int>(PageState::host)]},
                        {"device_pages", r.pages[static_cast<int>(PageState::device)]},
                        {"migrating_pages", r.pages[static_cast<int>(PageState::migrating)]}});
    }
    return {{"pid", ::getpid()}, {"ranges", std::move(list)}};
}

// [addr, addr+len) must lie in managed ranges: the first address that does not.
std::optional<std::uint64_t> first_unmanaged(Runtime& rt, std::uint64_t addr, std::uint64_t len) {
    auto list = rt.ranges();
    std::sort(list.begin(), list.end(), [](const RangeInfo& a, const RangeInfo& b) { return a.start < b.start; });
    std::uint64_t at = addr;
    for (const auto& r : list) {
        if (r.start + r.len <= at) continue;
        if (r.start > at) break;
        at = r.start + r.len;
        if (at >= addr + len) return std::nullopt;
    }
    return at;
}

json migrate(Runtime& rt, const json& req, const json& id, const Emit& emit, const std::atomic<bool>& stop) {
    const std::uint64_t addr = unsigned_field(req, "addr");
    const std::uint64_t len = unsigned_field(req, "len");
    const std::string to = string_field(req, "to");
    bool progress = false;
    if (auto it = req.find("progress"); it != req.end()) {
        if (!it->is_boolean()) throw Refusal{"BAD_REQUEST", "'progress' must be true or false"};
        progress = it->get<bool>();
    }
    Target target;
    if (to == "device") target = Target::device;
    else if (to == "host") target = Target::host;
    else throw Refusal{"EINVAL", "'to' must be \"device\" or \"host\", not \"" + to + "\""};
    if (addr % kPage) throw Refusal{"EINVAL", "address " + hex(addr) + " is not page-aligned (4096)"};
    if (len == 0) throw Refusal{"EINVAL", "length is zero"};
    if (len % kPage) throw Refusal{"EINVAL", "length " + std::to_string(len) + " is not a multiple of 4096"};
    if (len > kAddressLimit || addr > kAddressLimit - len)
        throw Refusal{"EINVAL", "range " + hex(addr) + " + " + std::to_string(len) + " is beyond any address"};
    if (auto gap = first_unmanaged(rt, addr, len))
        throw Refusal{"EFAULT", "address " + hex(*gap) + " (in " + hex(addr) + "-" + hex(addr + len) +
                                    ") is not in a managed range"};

    MigrateResult total;
    const auto t0 = std::chrono::steady_clock::now();
    for (std::uint64_t done = 0; done < len && !stop.load(std::memory_order_relaxed);) {
        const std::uint64_t piece = std::min(kPiece, len - done);
        auto res = rt.migrate(reinterpret_cast<void*>(addr + done), piece, target);
        if (!res) throw Refusal{errno_name(res.error()), "migrate: " + res.error().message()};
        total.add(*res);
        done += piece;
        if (progress) {
            json line = {{"progress", {{"done_pages", done / kPage}, {"total_pages", len / kPage}}}};
            if (!id.is_null()) line["id"] = id;
            emit(line.dump());
        }
    }
    total.requested = len / kPage;   // pieces not run (stop) count as neither moved nor failed
    json reply = {{"requested_pages", total.requested},
                  {"migrated_pages", total.migrated},
                  {"already_pages", total.already_there},
                  {"failed_pages", total.failed},
                  {"bytes", total.bytes},
                  {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
    if (total.failed && total.error) reply["first_error"] = total.error.message();
    return reply;
}

json set_policy(Runtime& rt, const json& req) {
    const std::string spec = string_field(req, "spec");
    const PolicyConfig previous = rt.policy();
    std::string why;
    auto next = parse_policy_spec(spec, previous, &why);
    if (!next) throw Refusal{"EINVAL", why};
    if (auto ec = rt.set_policy(*next)) throw Refusal{errno_name(ec), "policy: " + ec.message()};
    RuntimeConfig c = rt.config();
    c.policy = *next;
    return {{"policy", std::string(to_string(next->kind))},
            {"previous", std::string(to_string(previous.kind))},
            {"config", c.to_string()}};
}

}  // namespace

std::string error_line(std::string_view code, std::string_view message) {
    return json{{"ok", false}, {"error", code}, {"message", message}}.dump();
}

void handle_request(Runtime& rt, std::string_view line, const Emit& emit, const std::atomic<bool>& stop) noexcept {
    json id;   // null: none given
    try {
        try {
            json req = json::parse(line, nullptr, /*allow_exceptions=*/false);
            if (req.is_discarded()) throw Refusal{"PARSE", "not JSON"};
            if (!req.is_object()) throw Refusal{"BAD_REQUEST", "a request is a JSON object"};
            if (auto it = req.find("id"); it != req.end()) id = *it;
            const std::string cmd = string_field(req, "cmd");
            json reply;
            if (cmd == "hello") reply = hello(rt);
            else if (cmd == "ranges") reply = ranges(rt);
            else if (cmd == "stat") reply = json::parse(rt.stats_json());
            else if (cmd == "migrate") reply = migrate(rt, req, id, emit, stop);
            else if (cmd == "policy") reply = set_policy(rt, req);
            else throw Refusal{"UNKNOWN_CMD", "unknown command '" + cmd + "' (hello, ranges, stat, migrate, policy)"};
            reply["ok"] = true;
            if (!id.is_null()) reply["id"] = id;
            emit(reply.dump(-1, ' ', false, json::error_handler_t::replace));
        } catch (const Refusal& r) {
            json reply = {{"ok", false}, {"error", r.code}, {"message", r.message}};
            if (!id.is_null()) reply["id"] = id;
            emit(reply.dump(-1, ' ', false, json::error_handler_t::replace));
        }
    } catch (const std::exception& e) {
        // Out of memory, or a reply that would not serialize: say so, keep serving.
        try {
            emit(error_line("EIO", std::string("internal error: ") + e.what()));
        } catch (...) {
        }
    } catch (...) {
    }
}

}  // namespace uhmm::control
