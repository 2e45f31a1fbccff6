// hmmctl migrate PID ADDR LEN --to device|host: move pages by request and
// say what happened to them. The request always asks for progress lines (one
// per 64 MiB piece): they draw the bar on a terminal and show the process is
// alive, so a long migration never runs into the reply timeout.
//
// Pages that failed make the exit status 1 after the counts are printed:
// the migration ran, but did not do all it was asked.
#include "client.hpp"
#include "commands.hpp"
#include "errors.hpp"
#include "format.hpp"
#include "progress.hpp"

namespace hmmctl {

int migrate_command(const Common& common, const MigrateOptions& o) {
    auto client = Client::connect(o.pid, common.timeout);
    ProgressBar bar;
    auto reply = without_envelope(client.call(
        {{"cmd", "migrate"}, {"addr", o.addr}, {"len", o.len}, {"to", o.to}, {"progress", true}},
        [&](const nlohmann::json& p) { bar.update(number_or(p, "done_pages", 0), number_or(p, "total_pages", 0)); }));
    bar.finish();

    const double seconds = reply.value("seconds", 0.0);
    const std::uint64_t bytes = number_or(reply, "bytes", number_or(reply, "migrated_pages", 0) * 4096);
    const double gbps = seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0;
    if (common.json) {
        reply["gb_per_s"] = gbps;
        print_json(reply);
    } else {
        Table t({"", ""});
        t.add({"requested", field(reply, "requested_pages") + " pages (" + human_bytes(o.len) + ") to " + o.to});
        t.add({"migrated", field(reply, "migrated_pages") + " pages (" + human_bytes(bytes) + ")"});
        t.add({"already there", field(reply, "already_pages") + " pages"});
        t.add({"failed", field(reply, "failed_pages") + " pages"});
        t.add({"seconds", fixed(seconds, 4)});
        t.add({"GB/s", fixed(gbps, 2)});
        t.print(stdout);
    }
    if (const auto failed = number_or(reply, "failed_pages", 0); failed > 0)
        fail(std::to_string(failed) + " pages could not move to the " + o.to + ": " +
             reply.value("first_error", std::string("(no reason given)")));
    return exit_ok;
}

}  // namespace hmmctl
