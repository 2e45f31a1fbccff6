// A preloaded program must not notice uhmm: on a stock machine with no
// UHMM_CONF it prints what it prints natively and sees the descriptors it
// sees natively; under a chaos policy, real multi-process programs give the
// same bytes; an exhausted arena leaves pages on the host with their data;
// threads that fork and exec children while pages move never hang.
//
// Each case runs real programs natively and preloaded and compares stdout
// and stderr byte for byte; a hang is killed by the harness (Command's
// timeout) and reported as a failure. Cases that need huge pages reserve
// them as root through /proc/sys/vm/nr_hugepages and restore the pool.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "compare.hpp"
#include "harness.hpp"

using namespace uhmm::preload_test;

namespace {

const std::string kPool = "/sys/kernel/mm/hugepages/hugepages-2048kB";

long pool_value(const char* name) {
    std::ifstream in(kPool + "/" + name);
    long v = -1;
    return (in >> v) ? v : -1;
}

// The huge page pool resized so that exactly `free_pages` are free (pages
// in use by others stay theirs), and put back on destruction. ok() is false
// where the kernel does not have or grant them.
class FreeHugePages {
public:
    explicit FreeHugePages(long free_pages) {
        const long total = pool_value("nr_hugepages"), free = pool_value("free_hugepages");
        if (total < 0 || free < 0) return;
        const long want = total - free + free_pages;
        set_.emplace("/proc/sys/vm/nr_hugepages", std::to_string(want));
        ok_ = set_->ok() && pool_value("free_hugepages") == free_pages;
    }
    bool ok() const { return ok_; }

private:
    std::optional<SysctlOverride> set_;
    bool ok_ = false;
};

// Runs `argv` both ways (preloaded with `conf`, empty: no UHMM_CONF) and
// checks the same exit and the same bytes.
std::pair<Outcome, Outcome> both_ways(const Setting& s, Command c, const std::string& conf) {
    c.label += "-native";
    const Outcome native = run(c, s.tmp.path());
    c.label.replace(c.label.size() - 7, 7, "-preload");
    const Outcome preloaded = run_preloaded(c, s.tmp.path(), s.in.preload, conf);
    check_same_run(native, preloaded);
    return {native, preloaded};
}

// Under a shell that closes fd 0 first (as a program started with its
// standard input closed).
Command stdin_closed(const std::string& program, std::vector<std::string> args, std::string label) {
    std::string line = "exec 0<&-; exec " + program;
    for (const auto& a : args) line += " '" + a + "'";
    return Command{{"/bin/sh", "-c", line}, std::move(label)};
}

// The chaos policy of these cases, with the default arena unless `arena`.
std::string chaos(const Setting& s, const std::string& arena = {}) {
    return "policy=chaos,chaos_period_ms=5,chaos_fraction=0.5,min_range=64K" + (arena.empty() ? "" : "," + arena) +
           ",stats=" + s.stats_dir + "/uhmm-%p.json";
}

}  // namespace

// ---- invisible by default ----------------------------------------------------------

TEST_CASE("with no UHMM_CONF a program prints nothing of uhmm, sees its own fds and keeps the huge pages",
          "[preload][quiet]") {
    Setting s;
    // Two free huge pages that belong to "other software": the program reads
    // how many are free, natively and preloaded, and must read the same.
    FreeHugePages pool(2);
    if (!pool.ok()) WARN("could not reserve 2 huge pages: the huge page part is not covered here");
    const std::string probe =
        "import os\n"
        "print(sorted(os.listdir('/proc/self/fd')))\n"
        "fd = os.open('/dev/null', os.O_RDONLY); print('first open', fd)\n"
        "b = bytearray(32 << 20); b[::4096] = b'x' * (len(b) // 4096); print(b.count(b'x'))\n"
        "print(open('" + kPool + "/free_hugepages').read().strip())\n"
        // CUDA is loaded only when a cuda:N arena is asked for, even in a
        // build with CUDA: natively no process maps libcudart or libcuda.
        "print('cuda mapped', any('libcuda' in l for l in open('/proc/self/maps')))\n";
    const std::string script = s.tmp.file("probe.py");
    {
        std::ofstream(script) << probe;
    }
    both_ways(s, {{"/usr/bin/python3", script}, "probe"}, "");
    both_ways(s, stdin_closed("/usr/bin/python3", {script}, "probe-closed"), "");
    // A shell pipeline: every process of it preloaded, stderr joined to stdout.
    both_ways(s, {{"/bin/sh", "-c", "seq 1 50000 | sort -r | gzip -c | gzip -dc | head -3 2>&1; ls /proc/self/fd 2>&1"},
                  "pipeline"},
              "");
}

TEST_CASE("a hugepage arena asked for where there are none: one warning, and log=off silences it",
          "[preload][quiet]") {
    Setting s;
    FreeHugePages none(0);
    REQUIRE(none.ok());
    const Command c{{"/usr/bin/python3", "-c", "print(sum(bytearray(8 << 20)))"}, "explicit"};
    const Outcome native = s.native(c);
    REQUIRE(native.exited_ok());
    // Asked for explicitly: the user hears once that the machine cannot give it.
    Command asked = c;
    asked.label = "asked";
    const Outcome warned = run_preloaded(asked, s.tmp.path(), s.in.preload, "arena=hugepage,min_range=64K");
    REQUIRE(warned.exited_ok());
    check_one_uhmm_line(warned, {"hugepage", "fell back"});
    CHECK(!files_differ(native.out_path, warned.out_path));
    // log=off: nothing at all.
    Command quiet = c;
    quiet.label = "quiet";
    const Outcome silent = run_preloaded(quiet, s.tmp.path(), s.in.preload, "arena=hugepage,min_range=64K,log=off");
    REQUIRE(silent.exited_ok());
    CHECK(read_file(silent.err_path).empty());
    CHECK(!files_differ(native.out_path, silent.out_path));
}

TEST_CASE("the runtime's descriptors are out of the program's way: listing, first open, closerange, pass_fds",
          "[preload][fds]") {
    Setting s;
    // With fd 0 closed, the program's first open() is 0 natively; the
    // userfaultfd must not be sitting there. closerange(3, 1M) and close()
    // of every descriptor up to 4096 must leave the runtime working: the
    // chaos policy keeps moving the 32 MiB the program checks afterwards.
    const auto [native, preloaded] =
        both_ways(s, stdin_closed("/usr/bin/python3", {s.src("fds.py")}, "fds"), chaos(s));
    const Stats stats = check_stats_file(s, preloaded);
    report("fds.py", native, preloaded, stats);
    check_managed(stats);
}

// ---- never lose data on exhaustion ------------------------------------------------

TEST_CASE("an arena exhausted mid-run leaves pages on the host with their data, for every arena kind",
          "[preload][exhausted]") {
    Setting s;
    const Command c{{"/usr/bin/python3", s.src("exhaust.py")}, "exhaust"};
    struct Kind {
        const char* name;
        std::string arena;
    };
    // hugepage: one free huge page (the arena's first chunk), so the pool runs
    // dry at the first growth; memfd and numa: a 2 MiB arena_size.
    const std::vector<Kind> kinds = {{"hugepage", "arena=hugepage"},
                                     {"memfd", "arena=memfd,arena_size=2M"},
                                     {"numa", "arena=numa:0,arena_size=2M"}};
    for (const auto& kind : kinds) {
        SECTION(kind.name) {
            std::optional<FreeHugePages> pool;
            if (std::string(kind.name) == "hugepage") {
                pool.emplace(1);
                REQUIRE(pool->ok());
            }
            Command run_c = c;
            run_c.label += std::string("-") + kind.name;
            const auto [native, preloaded] = both_ways(s, run_c, chaos(s, kind.arena) + ",log=error");
            const Stats stats = check_stats_file(s, preloaded);
            report(kind.name, native, preloaded, stats);
            check_managed(stats);
            INFO(stats.summary());
            // The arena really ran out: some pages could not move.
            CHECK(stats.get("migrate_failed_pages") > 0);
            CHECK(stats.get("arena_high_water_bytes") <= 2 * 1024 * 1024);
        }
    }
}

// ---- fork and exec while pages move ---------------------------------------------

TEST_CASE("threads forking and execing hundreds of children under chaos at 2 ms: no hang, same output",
          "[preload][forkexec]") {
    Setting s;
    const std::string storm = std::getenv("UHMM_FORK_EXEC_STORM") ? std::getenv("UHMM_FORK_EXEC_STORM") : "";
    REQUIRE(::access(storm.c_str(), X_OK) == 0);
    Command c{{storm, "4", "12"}, "storm"};
    c.timeout_s = 150;
    const auto conf = "policy=chaos,chaos_period_ms=2,chaos_fraction=0.5,min_range=64K,stats=" + s.stats_dir +
                      "/uhmm-%p.json";
    const auto [native, preloaded] = both_ways(s, c, conf);
    const Stats stats = check_stats_file(s, preloaded);
    report("fork_exec_storm", native, preloaded, stats);
    check_managed(stats);
    // The exec'd children ran runtimes of their own (one file each).
    CHECK(count_stats_files(s.stats_dir) > 48);
}

// ---- other people's programs, natively and under chaos -------------------------------

TEST_CASE("a shell pipeline, make -j2 of a small tree and Python's subprocess and multiprocessing match natively",
          "[preload][differential]") {
    Setting s;
    require_program("/usr/bin/make", "make");
    require_program("/usr/bin/cc", "gcc");
    SECTION("shell pipeline") {
        const auto [native, preloaded] = both_ways(
            s,
            {{"/bin/sh", "-c",
              "seq 1 300000 | sort -rn | gzip -c | gzip -dc | awk '{s += $1} END {print s}' | tee sum.txt | wc -c; "
              "cat sum.txt"},
             "pipeline"},
            chaos(s));
        report("pipeline (sh)", native, preloaded, read_stats(s.stats_dir, preloaded.pid));
        // sort's and gzip's buffers moved; the processes wrote statistics (the
        // shell itself leaves with _exit, which writes none).
        CHECK(count_stats_files(s.stats_dir) >= 7);
        CHECK(sum_over_stats_files(s.stats_dir, "migrations") > 0);
        CHECK(sum_over_stats_files(s.stats_dir, "faults") > 0);
    }
    SECTION("make -j2") {
        // A tree of eight C files and a Makefile, built twice from scratch.
        for (const char* tree : {"tree-native", "tree-preload"}) {
            const std::string dir = s.tmp.file(tree);
            REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
            std::string objs, decls, calls;
            for (int i = 0; i < 8; ++i) {
                const std::string n = std::to_string(i);
                std::ofstream(dir + "/f" + n + ".c")
                    << "#include <stdlib.h>\nlong f" << n << "(long x) {\n  long *v = malloc(1 << 20);\n"
                    << "  long s = 0;\n  for (long i = 0; i < (1 << 17); ++i) v[i] = i * " << i + 3 << " + x;\n"
                    << "  for (long i = 0; i < (1 << 17); ++i) s += v[i];\n  free(v);\n  return s;\n}\n";
                objs += " f" + n + ".o";
                decls += "long f" + n + "(long);\n";
                calls += "  printf(\"f" + n + " %ld\\n\", f" + n + "(" + n + "));\n";
            }
            std::ofstream(dir + "/main.c") << "#include <stdio.h>\n" << decls << "int main(void) {\n" << calls
                                           << "  return 0;\n}\n";
            std::ofstream(dir + "/Makefile") << "prog: main.o" << objs << "\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O2 -c $<\n";
        }
        Command c{{"/bin/sh", "-c", "cd tree-native && make -s -j2 && ./prog"}, "make"};
        c.label += "-native";
        const Outcome native = run(c, s.tmp.path());
        c.argv[2] = "cd tree-preload && make -s -j2 && ./prog";
        c.label = "make-preload";
        const Outcome preloaded = run_preloaded(c, s.tmp.path(), s.in.preload, chaos(s));
        check_same_run(native, preloaded);
        report("make -j2", native, preloaded, read_stats(s.stats_dir, preloaded.pid));
        CHECK(count_stats_files(s.stats_dir) >= 10);   // make, sh, cc's passes, the linker, prog
        CHECK(sum_over_stats_files(s.stats_dir, "migrations") > 0);
    }
    SECTION("python subprocess and multiprocessing") {
        const auto [native, preloaded] = both_ways(s, {{"/usr/bin/python3", s.src("procs.py")}, "procs"}, chaos(s));
        const Stats stats = check_stats_file(s, preloaded);
        report("procs.py", native, preloaded, stats);
        check_managed(stats);
    }
}

// ---- statistics of multi-process runs -------------------------------------------------

TEST_CASE("stats= without %p: a process overwriting the file another wrote during its run says so",
          "[preload][conf]") {
    Setting s;
    // Python starts before its child and ends after it, whatever the load:
    // true writes the file while python runs, then python overwrites it,
    // and says so in one line. (Not a shell: dash leaves through _exit,
    // and writes no statistics at all.)
    const Command c{{"/usr/bin/python3", "-c", "import subprocess; subprocess.run(['/bin/true'], check=True)"},
                    "shared-stats"};
    const Outcome shared =
        run_preloaded(c, s.tmp.path(), s.in.preload, "stats=" + s.tmp.file("one.json"));
    REQUIRE(shared.exited_ok());
    check_one_uhmm_line(shared, {"stats=", "another process wrote it", "%p"});
    // With %p each process has its own file, and nothing is said.
    Command per_pid = c;
    per_pid.label = "per-pid-stats";
    const Outcome own = run_preloaded(per_pid, s.tmp.path(), s.in.preload, "stats=" + s.stats_dir + "/uhmm-%p.json");
    REQUIRE(own.exited_ok());
    CHECK(read_file(own.err_path).empty());
    CHECK(count_stats_files(s.stats_dir) >= 2);
}

TEST_CASE("stats= where nothing can be written is said once, at start, and the program runs as natively",
          "[preload][conf]") {
    Setting s;
    const Command c{{"/usr/bin/python3", "-c", "import sys; print(sum(bytearray(4 << 20))); sys.stdout.flush()"},
                    "unwritable-stats"};
    const Outcome native = s.native(c);
    REQUIRE(native.exited_ok());
    Command pre = c;
    pre.label += "-preload";
    const Outcome preloaded =
        run_preloaded(pre, s.tmp.path(), s.in.preload, "min_range=64K,stats=" + s.tmp.file("no/such/dir/%p.json"));
    REQUIRE(preloaded.exited_ok());
    CHECK(!files_differ(native.out_path, preloaded.out_path));
    check_one_uhmm_line(preloaded, {"stats=", "cannot write in", "no/such/dir", "No such file or directory"});
}
