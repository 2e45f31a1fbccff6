// hmmctl policy PID SPEC: change the placement policy and its knobs now.
// The spec is checked here first with the runtime's own parser, so that a
// typo is a usage error (exit 2) and the process is never asked.
#include <uhmm/runtime.hpp>

#include "client.hpp"
#include "commands.hpp"
#include "errors.hpp"
#include "format.hpp"

namespace hmmctl {

int policy_command(const Common& common, pid_t pid, const std::string& spec) {
    std::string why;
    if (!uhmm::parse_policy_spec(spec, uhmm::PolicyConfig{}, &why)) {
        if (why.rfind("UHMM_CONF: ", 0) == 0) why.replace(0, 11, "policy spec: ");
        usage_error(why);
    }
    auto client = Client::connect(pid, common.timeout);
    const auto reply = without_envelope(client.call({{"cmd", "policy"}, {"spec", spec}}));
    if (common.json) {
        print_json(reply);
        return exit_ok;
    }
    std::printf("process %d: policy %s -> %s\n  %s\n", pid, field(reply, "previous").c_str(),
                field(reply, "policy").c_str(), field(reply, "config").c_str());
    return exit_ok;
}

}  // namespace hmmctl
