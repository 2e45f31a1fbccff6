// Bad input to hmmctl: each a clear one-line "hmmctl: ..." message and the
// documented exit code (1: the operation failed, 2: the command line is
// wrong), and the target's data intact afterwards.
#include <catch2/catch.hpp>

#include "fixture.hpp"

using namespace uhmm::hmmctl_test;

namespace {

void expect(const Ran& r, int status, const std::string& message) {
    INFO(r.describe());
    CHECK(r.status == status);
    CHECK(one_message(r.err, message));
    CHECK(r.out.empty());
}

}  // namespace

TEST_CASE("an unknown pid is 'no process N' (exit 1) for every command", "[bad-input]") {
    Fixture f;
    const std::string pid = std::to_string(unused_pid());
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"ranges", pid}, {"stat", pid}, {"migrate", pid, "0x1000", "4K", "--to", "device"},
             {"policy", pid, "none"}, {"maps", pid}, {"watch", pid, "--count", "1"}, {"stat", pid, "--json"}})
        expect(f.ctl(args), 1, "no process " + pid);
}

TEST_CASE("a process without a runtime is reported with the directories searched (exit 1)", "[bad-input]") {
    Fixture f;
    auto t = f.plain_target();
    const std::string pid = std::to_string(t->pid());
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"ranges", pid}, {"stat", pid}, {"migrate", pid, hex(t->addr()), "4K", "--to", "device"},
             {"policy", pid, "tier"}, {"watch", pid, "--count", "1"}})
        expect(f.ctl(args), 1, "process " + pid + " has no uhmm runtime (no socket in " + f.run_dir());
    CHECK(t->ask("verify") == "OK");
}

TEST_CASE("garbage numbers and malformed ranges are usage errors (exit 2) and move nothing", "[bad-input]") {
    Fixture f;
    auto t = f.managed_target(16);
    const std::string pid = std::to_string(t->pid());
    const std::string addr = hex(t->addr());
    auto migrate = [&](const std::string& p, const std::string& a, const std::string& l, const std::string& to) {
        return f.ctl({"migrate", p, a, l, "--to", to});
    };
    expect(migrate(pid, hex(t->addr() + 1), "4K", "device"), 2, "not page-aligned");
    expect(migrate(pid, addr, "4097", "device"), 2, "not a whole number of pages");
    expect(migrate(pid, addr, "0", "device"), 2, "LEN is zero");
    expect(migrate(pid, addr, "0x0", "host"), 2, "LEN is zero");
    expect(migrate(pid, addr, "99999999999999999999", "device"), 2, "too large");
    expect(migrate(pid, addr, "0xfffffffffffff000", "device"), 2, "past the end");
    expect(migrate(pid, "0x10000000000000000", "4K", "device"), 2, "too large");
    for (const char* garbage : {"12q", "0x", "", "-4096", "4.5M", " 4096", "4KB", "lots"})
        expect(migrate(pid, addr, garbage, "device"), 2, "LEN");
    for (const char* garbage : {"0xzz", "4K", "addr", "-1"}) expect(migrate(pid, garbage, "4K", "device"), 2, "ADDR");
    for (const char* garbage : {"abc", "-1", "0", "12x", "99999999999"})
        expect(f.ctl({"ranges", garbage}), 2, "PID");
    expect(migrate(pid, addr, "4K", "gpu"), 2, "--to must be device or host");
    expect(f.ctl({"policy", pid, "bogus"}), 2, "policy");
    expect(f.ctl({"policy", pid, "tier,arena=memfd"}), 2, "not a policy knob");

    const Ran usage = f.ctl({"migrate", pid, addr});   // LEN and --to missing: CLI11's message
    INFO(usage.describe());
    CHECK(usage.status == 2);
    CHECK(usage.err.rfind("hmmctl: ", 0) == 0);
    const Ran unknown = f.ctl({"frobnicate"});
    CHECK(unknown.status == 2);
    CHECK(f.ctl({}).status == 2);

    const Ran r = f.ctl({"ranges", pid, "--json"});
    REQUIRE(r.status == 0);
    CHECK(u64(range_holding(r.json(), t->addr(), t->len()), "device_pages") == 0);
    CHECK(t->ask("verify") == "OK");
    CHECK(t->finish("exit 0") == 0);
}

TEST_CASE("ranges outside the managed memory are refused by the process (exit 1 with EFAULT)", "[bad-input]") {
    Fixture f;
    auto t = f.managed_target(16);
    const std::string pid = std::to_string(t->pid());
    const auto ranges = f.ctl({"ranges", pid, "--json"}).json();
    const auto r = range_holding(ranges, t->addr(), t->len());
    REQUIRE(r.is_object());
    const std::uint64_t end = u64(r, "end");
    auto migrate = [&](std::uint64_t a, const std::string& l) {
        return f.ctl({"migrate", pid, hex(a), l, "--to", "device"});
    };
    expect(migrate(0x1000, "4K"), 1, "EFAULT");                    // nothing there
    expect(migrate(end - 4096, "8K"), 1, "EFAULT");                // runs past the range's end
    expect(migrate(t->addr(), "1T"), 1, "EFAULT");                 // a huge length
    expect(migrate(0x7ffffffff000, "4K"), 1, "EFAULT");            // the top of user space
    const Ran after = f.ctl({"ranges", pid, "--json"});
    CHECK(u64(range_holding(after.json(), t->addr(), t->len()), "device_pages") == 0);
    CHECK(t->ask("verify") == "OK");
    CHECK(t->finish("exit 0") == 0);
}

TEST_CASE("an unknown command or option is named in one line (exit 2)", "[bad-input]") {
    Fixture f;
    expect(f.ctl({"frobnicate"}), 2, "unknown command 'frobnicate'");
    expect(f.ctl({"--bogus"}), 2, "unknown option '--bogus'");
    expect(f.ctl({"--bogus", "list"}), 2, "unknown option '--bogus'");
    expect(f.ctl({"list", "--bogus"}), 2, "list: unknown option '--bogus'");
    expect(f.ctl({"list", "extra"}), 2, "list: unexpected argument 'extra'");
    expect(f.ctl({"ranges", "1", "--frob"}), 2, "ranges: unknown option '--frob'");
    // CMD's options before --: said, with where they go.
    expect(f.ctl({"run", "--frob", "--", "/bin/true"}), 2, "run: unknown option '--frob'");
    expect(f.ctl({"run", "--frob", "--", "/bin/true"}), 2, "CMD's own options go after --");
    // No command at all: which there are.
    expect(f.ctl({}), 2, "a command is required (commands: run, list,");
    for (const auto& r : {f.ctl({"frobnicate"}), f.ctl({"--bogus"})}) CHECK_FALSE(contains(r.err, "A subcommand"));
    // A missing argument: CLI11's words, one line, the command named.
    expect(f.ctl({"migrate", "1", "0x1000"}), 2, "migrate: ");
}

TEST_CASE("--timeout and --interval out of range say their bounds in seconds (exit 2)", "[bad-input]") {
    Fixture f;
    const std::string timeout_range = "--timeout: must be between 0.001 and 3600 seconds";
    for (const char* bad : {"0", "-1", "0.0001", "3601", "1e300", "nan", "inf", "soon", ""})
        expect(f.ctl({"list", "--timeout", bad}), 2, timeout_range);
    expect(f.ctl({"stat", "1", "--timeout", "0"}), 2, timeout_range + ", not '0'");
    const Ran r = f.ctl({"list", "--timeout", "0"});
    CHECK(r.err.size() < 200);   // not CLI11's 309-digit bound
    expect(f.ctl({"watch", "1", "--interval", "0"}), 2, "--interval: must be between 0.05 and 3600 seconds");
    // The bounds themselves are fine.
    CHECK(f.ctl({"list", "--timeout", "0.001"}).status == 0);
    CHECK(f.ctl({"list", "--timeout", "3600"}).status == 0);
}
