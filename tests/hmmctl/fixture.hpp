// What every hmmctl case starts from: the inputs meson passes, a private
// directory with the control sockets in it (UHMM_RUNTIME_DIR, for the
// targets and hmmctl alike), and short ways to run hmmctl and start targets.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "harness.hpp"

namespace uhmm::hmmctl_test {

class Fixture {
public:
    Fixture();   // REQUIREs the inputs and the directory
    ~Fixture();

    // hmmctl with these arguments.
    Ran ctl(std::vector<std::string> args, const RunOptions& options = {}) const;
    // hmmctl as uid/gid 65534 (nobody), no groups, through setpriv(1): a copy
    // of the binary in a directory nobody may enter.
    Ran ctl_as_nobody(std::vector<std::string> args) const;

    // The target (MiB mebibytes, then `extra` arguments it ignores) under
    // `hmmctl run` with policy none and a memfd arena: READY read and its
    // socket there, or REQUIRE fails.
    std::unique_ptr<Target> managed_target(unsigned mib = 64, const std::string& conf = "",
                                           const std::vector<std::string>& extra = {});
    // The target without uhmm.
    std::unique_ptr<Target> plain_target(unsigned mib = 16, bool hugepage = false);

    std::string socket_of(pid_t pid) const;
    const std::string& run_dir() const { return run_dir_; }
    const TempDir& dir() const { return dir_; }
    const Inputs& inputs() const { return in_; }

private:
    Inputs in_;
    TempDir dir_;
    std::string run_dir_;
    std::unique_ptr<TempDir> nobody_dir_;
    int targets_ = 0;
};

// The managed range that holds [addr, addr+len) in a `ranges --json` reply;
// null when none does.
nlohmann::json range_holding(const nlohmann::json& ranges, std::uint64_t addr, std::uint64_t len);
std::uint64_t u64(const nlohmann::json& j, const char* key);   // 0 when missing or not a number
std::string hex(std::uint64_t v);
// Whether `err` is one "hmmctl: ..." message (one line) that contains `what`.
bool one_message(const std::string& err, const std::string& what);

}  // namespace uhmm::hmmctl_test
