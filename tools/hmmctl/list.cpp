// hmmctl list: every process with a live runtime, found by its socket in
// the directories control::all_dirs() names (root looks in every user's).
// A socket whose process is gone (killed by a signal, so it could not remove
// it) is removed here, as docs/CONTROL.md promises, when it is ours and
// nobody answers on it (sockets.hpp says what is read and what is removed).
#include "client.hpp"
#include "commands.hpp"
#include "control/paths.hpp"
#include "errors.hpp"
#include "format.hpp"
#include "printable.hpp"
#include "sockets.hpp"

namespace hmmctl {

namespace {

nlohmann::json describe(pid_t pid, const std::string& path, std::chrono::milliseconds timeout) {
    try {
        const auto hello = Client::connect_path(path, pid, timeout).hello();
        return {{"pid", pid},
                {"command", hello.value("command", std::string())},
                {"managed_bytes", number_or(hello, "managed_bytes", 0)},
                {"host_bytes", number_or(hello, "host_bytes", 0)},
                {"device_bytes", number_or(hello, "device_bytes", 0)},
                {"ranges", number_or(hello, "ranges", 0)},
                {"policy", hello.value("policy", std::string())},
                {"socket", path}};
    } catch (const Failure& f) {
        return {{"pid", pid}, {"socket", path}, {"error", f.what()}};
    }
}

}  // namespace

int list_command(const Common& common) {
    const auto dirs = uhmm::control::all_dirs();
    nlohmann::json processes = nlohmann::json::array();
    for (const auto& [pid, socket] : find_sockets(dirs)) {
        if (!uhmm::control::process_uid(pid)) {
            remove_stale(socket);   // its process is gone
            continue;
        }
        processes.push_back(describe(pid, socket.path(), common.timeout));
    }
    if (common.json) {
        print_json({{"processes", processes}});
        return exit_ok;
    }
    if (processes.empty()) {
        std::string where;
        for (const auto& d : dirs) where += (where.empty() ? "" : ", ") + d.path;
        std::printf("no process with a uhmm runtime (looked in %s)\n", printable(where).c_str());
        return exit_ok;
    }
    Table t({"PID", "MANAGED", "HOST", "DEVICE", "POLICY", "COMMAND"}, {true, true, true, true, false, false});
    for (const auto& p : processes) {
        if (p.contains("error")) {
            t.add({field(p, "pid"), "-", "-", "-", "-", "(" + p.value("error", std::string()) + ")"});
            continue;
        }
        t.add({field(p, "pid"), field_bytes(p, "managed_bytes"), field_bytes(p, "host_bytes"),
               field_bytes(p, "device_bytes"), field(p, "policy"), field(p, "command")});
    }
    t.print(stdout);
    return exit_ok;
}

}  // namespace hmmctl
