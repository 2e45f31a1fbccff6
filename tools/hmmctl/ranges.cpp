// hmmctl ranges PID: every managed range with its pages by state.
#include "client.hpp"
#include "commands.hpp"
#include "errors.hpp"
#include "format.hpp"

namespace hmmctl {

int ranges_command(const Common& common, pid_t pid) {
    auto client = Client::connect(pid, common.timeout);
    const auto reply = client.call({{"cmd", "ranges"}});
    const auto ranges = reply.find("ranges");
    if (ranges == reply.end() || !ranges->is_array()) fail("process " + std::to_string(pid) + " sent no ranges");
    if (common.json) {
        print_json(without_envelope(reply));
        return exit_ok;
    }
    Table t({"START", "END", "SIZE", "NONE", "HOST", "DEVICE", "MIGRATING"},
            {false, false, true, true, true, true, true});
    std::uint64_t total[4] = {}, bytes = 0;
    static const char* const kStates[] = {"none_pages", "host_pages", "device_pages", "migrating_pages"};
    for (const auto& r : *ranges) {
        const auto start = number_or(r, "start", 0), end = number_or(r, "end", 0);
        bytes += end - start;
        std::vector<std::string> row{hex(start), hex(end), human_bytes(end - start)};
        for (int s = 0; s < 4; ++s) {
            total[s] += number_or(r, kStates[s], 0);
            row.push_back(field(r, kStates[s]));
        }
        t.add(std::move(row));
    }
    if (ranges->size() > 1)
        t.add({"total", count_of(ranges->size(), "range"), human_bytes(bytes), std::to_string(total[0]),
               std::to_string(total[1]), std::to_string(total[2]), std::to_string(total[3])});
    if (ranges->empty()) std::printf("process %d manages no memory now\n", pid);
    else t.print(stdout);
    return exit_ok;
}

}  // namespace hmmctl
