// hmmctl watch PID: a live view, like top: every interval the process's
// residency (pages by state over all managed ranges), the policy and the
// arena, and the rates of faults and migrations since the last refresh,
// with the largest ranges below. On a terminal the screen is redrawn; else
// each refresh follows the last. --json: one object per refresh.
//
// Ctrl-C ends it (exit 0), so does --count; a process that goes away ends
// it with exit 1.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <ctime>
#include <optional>

#include "client.hpp"
#include "commands.hpp"
#include "control/paths.hpp"
#include "errors.hpp"
#include "format.hpp"
#include "printable.hpp"

namespace hmmctl {

namespace {

std::atomic<bool> interrupted{false};
extern "C" void on_interrupt(int) { interrupted.store(true); }

constexpr const char* kStates[] = {"none_pages", "host_pages", "device_pages", "migrating_pages"};
constexpr const char* kRated[] = {"faults", "pages_to_device", "pages_to_host", "bytes_to_device", "bytes_to_host"};
constexpr std::size_t kRangesShown = 10;

struct Sample {
    nlohmann::json stat, ranges;
    std::chrono::steady_clock::time_point at;
};

// Pages by state over every range.
nlohmann::json residency(const nlohmann::json& ranges) {
    nlohmann::json r;
    for (const char* s : kStates) r[s] = 0;
    for (const auto& range : ranges)
        for (const char* s : kStates) r[s] = r[s].get<std::uint64_t>() + number_or(range, s, 0);
    return r;
}

// Per second since `before`; empty before the second sample.
nlohmann::json rates(const Sample& now, const Sample* before) {
    nlohmann::json r = nlohmann::json::object();
    if (!before) return r;
    const double dt = std::chrono::duration<double>(now.at - before->at).count();
    if (dt <= 0) return r;
    for (const char* k : kRated) {
        const auto a = number_or(before->stat, k, 0), b = number_or(now.stat, k, 0);
        r[k] = b >= a ? static_cast<double>(b - a) / dt : 0.0;
    }
    return r;
}

// "1234 pages/s", "12.0 MiB/s"; "-" before there is a rate.
std::string rate(const nlohmann::json& r, const char* key, const char* unit) {
    if (!r.contains(key)) return "-";
    const double v = r[key].get<double>();
    return unit ? fixed(v, 0) + " " + unit + "/s" : human_bytes(static_cast<std::uint64_t>(v)) + "/s";
}

void draw(pid_t pid, const nlohmann::json& hello, const Sample& s, const nlohmann::json& res,
          const nlohmann::json& r, double interval_s, bool tty) {
    if (tty) std::printf("\x1b[H\x1b[2J");
    const std::time_t now = std::time(nullptr);
    char clock[16];
    std::strftime(clock, sizeof clock, "%H:%M:%S", std::localtime(&now));
    std::printf("process %d: %s    every %s s, Ctrl-C to stop    %s\n\n", pid,
                printable(hello.value("command", std::string("?"))).c_str(), fixed(interval_s, 1).c_str(), clock);
    auto pages = [&](const char* k) { return human_bytes(number_or(res, k, 0) * 4096); };
    Table t({"", ""});
    t.add({"residency", "host " + pages("host_pages") + ", device " + pages("device_pages") + ", migrating " +
                            pages("migrating_pages") + ", never touched " + pages("none_pages") + "  (" +
                            count_of(s.ranges.size(), "range") + ")"});
    t.add({"policy", field(s.stat, "policy")});
    t.add({"arena", arena_use(s.stat)});
    t.add({"faults", rate(r, "faults", "faults") + "  (" + field(s.stat, "faults") + " in all)"});
    t.add({"to device", rate(r, "pages_to_device", "pages") + ", " + rate(r, "bytes_to_device", nullptr)});
    t.add({"to host", rate(r, "pages_to_host", "pages") + ", " + rate(r, "bytes_to_host", nullptr)});
    t.print(stdout);
    std::printf("\n");

    std::vector<const nlohmann::json*> by_size;
    for (const auto& range : s.ranges) by_size.push_back(&range);
    auto size = [](const nlohmann::json* x) { return number_or(*x, "end", 0) - number_or(*x, "start", 0); };
    std::stable_sort(by_size.begin(), by_size.end(), [&](auto* a, auto* b) { return size(a) > size(b); });
    Table ranges({"START", "SIZE", "HOST", "DEVICE", "MIGRATING", "NONE"}, {false, true, true, true, true, true});
    for (std::size_t i = 0; i < by_size.size() && i < kRangesShown; ++i) {
        const auto& x = *by_size[i];
        ranges.add({hex(number_or(x, "start", 0)), human_bytes(size(by_size[i])), field(x, "host_pages"),
                    field(x, "device_pages"), field(x, "migrating_pages"), field(x, "none_pages")});
    }
    ranges.print(stdout);
    if (by_size.size() > kRangesShown)
        std::printf("(%s more)\n", count_of(by_size.size() - kRangesShown, "range").c_str());
    if (!tty) std::printf("\n");
    std::fflush(stdout);
}

// Sleeps `seconds` unless interrupted first.
void pause_for(double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!interrupted.load() && std::chrono::steady_clock::now() < until) ::usleep(20000);
}

}  // namespace

int watch_command(const Common& common, const WatchOptions& o) {
    auto client = Client::connect(o.pid, common.timeout);
    struct sigaction sa{};
    sa.sa_handler = on_interrupt;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    const bool tty = !common.json && ::isatty(STDOUT_FILENO) == 1;
    const auto start = std::chrono::steady_clock::now();
    std::optional<Sample> last;
    for (unsigned n = 0; !interrupted.load() && (o.count == 0 || n < o.count); ++n) {
        if (n > 0) pause_for(o.interval_s);
        if (interrupted.load()) break;
        Sample s;
        try {
            s.stat = without_envelope(client.call({{"cmd", "stat"}}));
            s.ranges = client.call({{"cmd", "ranges"}}).value("ranges", nlohmann::json::array());
        } catch (const Failure&) {
            if (!uhmm::control::process_uid(o.pid)) fail("process " + std::to_string(o.pid) + " exited");
            throw;
        }
        s.at = std::chrono::steady_clock::now();
        const auto res = residency(s.ranges);
        const auto r = rates(s, last ? &*last : nullptr);
        if (common.json)
            print_json({{"pid", o.pid},
                        {"seconds", std::chrono::duration<double>(s.at - start).count()},
                        {"residency", res},
                        {"rates", r},
                        {"stat", s.stat}});
        else
            draw(o.pid, client.hello(), s, res, r, o.interval_s, tty);
        last = std::move(s);
    }
    return exit_ok;
}

}  // namespace hmmctl
