// See fixture.hpp.
#include "fixture.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "skip.hpp"

namespace uhmm::hmmctl_test {

namespace {

bool wait_for_file(const std::string& path, int timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
        if (::access(path.c_str(), F_OK) == 0) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
}

std::string setpriv_path() {
    for (const char* p : {"/usr/bin/setpriv", "/bin/setpriv"})
        if (::access(p, X_OK) == 0) return p;
    return "";
}

}  // namespace

Fixture::Fixture() : in_(read_inputs()) {
    INFO(in_.problem);
    REQUIRE(in_.problem.empty());
    REQUIRE(!dir_.path().empty());
    run_dir_ = dir_.file("run");
    REQUIRE(::mkdir(run_dir_.c_str(), 0700) == 0);
    ::setenv("UHMM_RUNTIME_DIR", run_dir_.c_str(), 1);
}

Fixture::~Fixture() { ::unsetenv("UHMM_RUNTIME_DIR"); }

Ran Fixture::ctl(std::vector<std::string> args, const RunOptions& options) const {
    args.insert(args.begin(), in_.hmmctl);
    return run(args, options);
}

Ran Fixture::ctl_as_nobody(std::vector<std::string> args) const {
    auto& self = const_cast<Fixture&>(*this);
    if (!nobody_dir_) {
        self.nobody_dir_ = std::make_unique<TempDir>("uhmm-hmmctl-nobody");
        std::filesystem::copy_file(in_.hmmctl, nobody_dir_->file("hmmctl"));
        ::chmod(nobody_dir_->file("hmmctl").c_str(), 0755);
        ::chmod(nobody_dir_->path().c_str(), 0755);
    }
    const std::string setpriv = setpriv_path();
    INFO("setpriv(1) is in Debian's util-linux package");
    REQUIRE(!setpriv.empty());
    args.insert(args.begin(), {setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                               nobody_dir_->file("hmmctl")});
    return run(args);
}

std::unique_ptr<Target> Fixture::managed_target(unsigned mib, const std::string& conf,
                                                const std::vector<std::string>& extra) {
    const std::string err = dir_.file("target-" + std::to_string(++targets_) + ".err");
    std::vector<std::string> argv{in_.hmmctl, "run", "--arena", "memfd", "--arena-size", "256M", "--conf",
                                  "min_range=1M,log=error" + (conf.empty() ? "" : "," + conf), "--",
                                  in_.target, std::to_string(mib)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto t = std::make_unique<Target>(argv, std::vector<std::string>{}, err);
    const bool ready = t->ready();
    INFO("target: " << t->last_line() << "\nits stderr:\n" << read_file(err));
    REQUIRE(ready);
    INFO("no control socket " << socket_of(t->pid()) << " (does the runtime serve one?)");
    REQUIRE(wait_for_file(socket_of(t->pid()), 10));
    return t;
}

std::unique_ptr<Target> Fixture::plain_target(unsigned mib, bool hugepage) {
    const std::string err = dir_.file("target-" + std::to_string(++targets_) + ".err");
    std::vector<std::string> argv{in_.target, std::to_string(mib)};
    if (hugepage) argv.push_back("--hugepage");
    auto t = std::make_unique<Target>(argv, std::vector<std::string>{}, err);
    const bool ready = t->ready();
    INFO("target: " << t->last_line() << "\nits stderr:\n" << read_file(err));
    REQUIRE(ready);
    return t;
}

std::string Fixture::socket_of(pid_t pid) const { return run_dir_ + "/" + std::to_string(pid) + ".sock"; }

nlohmann::json range_holding(const nlohmann::json& reply, std::uint64_t addr, std::uint64_t len) {
    if (!reply.is_object() || !reply.contains("ranges") || !reply["ranges"].is_array()) return nullptr;
    for (const auto& r : reply["ranges"])
        if (u64(r, "start") <= addr && addr + len <= u64(r, "end")) return r;
    return nullptr;
}

std::uint64_t u64(const nlohmann::json& j, const char* key) {
    if (!j.is_object()) return 0;
    const auto it = j.find(key);
    return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

std::string hex(std::uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

bool one_message(const std::string& err, const std::string& what) {
    return err.rfind("hmmctl: ", 0) == 0 && err.find('\n') == err.size() - 1 && contains(err, what);
}

}  // namespace uhmm::hmmctl_test

// The cases run targets under userfaultfd and hmmctl as another user.
std::optional<std::string> uhmm_test_skip_reason() {
    if (::geteuid() != 0)
        return std::string("needs root: targets run under userfaultfd, and the other-uid cases run hmmctl as nobody");
    return uhmm::test::userfaultfd_unavailable();
}
