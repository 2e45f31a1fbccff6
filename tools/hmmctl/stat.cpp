// hmmctl stat PID: the runtime's counters and latencies, the same object the
// stats= file holds (Runtime::stats_json()).
#include "client.hpp"
#include "commands.hpp"
#include "errors.hpp"
#include "format.hpp"
#include "printable.hpp"

namespace hmmctl {

namespace {

std::string pages_and_bytes(const nlohmann::json& s, const char* pages, const char* bytes) {
    return field(s, pages) + " pages (" + field_bytes(s, bytes) + ")";
}

std::string latency(const nlohmann::json& s, const char* key) {
    const auto it = s.find(key);
    return it == s.end() || !it->is_number_integer() ? "-" : human_ns(it->get<std::uint64_t>());
}

}  // namespace

int stat_command(const Common& common, pid_t pid) {
    auto client = Client::connect(pid, common.timeout);
    const auto s = without_envelope(client.call({{"cmd", "stat"}}));
    if (common.json) {
        print_json(s);
        return exit_ok;
    }
    const auto& hello = client.hello();
    std::printf("process %d: %s\n", pid, printable(hello.value("command", std::string("?"))).c_str());
    std::printf("uhmm           %s\n", printable(s.value("version", std::string("?"))).c_str());
    Table t({"", ""});
    t.add({"policy", field(s, "policy") + "  (" + field(s, "policy_rounds") + " rounds, " + field(s, "migrations") +
                         " migrations)"});
    t.add({"faults", field(s, "faults") + "  (missing " + field(s, "faults_missing") + ", wp " +
                         field(s, "faults_wp") + "; first touch " + field(s, "first_touch_faults") + ", device " +
                         field(s, "device_faults") + ")"});
    t.add({"fault service", "p50 " + latency(s, "fault_p50_ns") + ", p99 " + latency(s, "fault_p99_ns")});
    t.add({"to device", pages_and_bytes(s, "pages_to_device", "bytes_to_device")});
    t.add({"to host", pages_and_bytes(s, "pages_to_host", "bytes_to_host") + "  (on fault " +
                          field(s, "pages_to_host_on_fault") + ")"});
    t.add({"copy batches", field(s, "copy_batches")});
    t.add({"managed", count_of(number_or(s, "ranges", 0), "range") + ", " + field_bytes(s, "managed_bytes") +
                          "  (device pages now " + field(s, "device_pages") + ")"});
    t.add({"arena", arena_use(s)});
    t.print(stdout);
    return exit_ok;
}

}  // namespace hmmctl
