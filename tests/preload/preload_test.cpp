// Unmodified programs under libuhmm_preload.so, end to end: each program runs
// natively and then under the preload with a chaos policy that keeps moving
// its memory to the device and back. The outputs must be byte-for-byte the
// same, and the statistics file of the program's own pid must show that its
// memory really was managed (faults > 0, migrations > 0). Two more cases check
// that a bad UHMM_CONF and a missing userfaultfd permission each cost one
// clear line on stderr and nothing else.
//
// Every input is generated here from a fixed seed, so the native run is the
// oracle. Runs happen in a private mkdtemp directory, removed at the end.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "compare.hpp"
#include "harness.hpp"
#include "skip.hpp"

using namespace uhmm::preload_test;

std::optional<std::string> uhmm_test_skip_reason() {
    if (::geteuid() != 0)
        return std::string("needs root: programs run with userfaultfd, and the no-permission case "
                           "sets vm.unprivileged_userfaultfd and runs as nobody");
    return uhmm::test::userfaultfd_unavailable();
}

namespace {

constexpr std::uint64_t kMiB = 1 << 20;

// ---- deterministic inputs ---------------------------------------------------

class Prng {   // splitmix64: fast, and the same sequence everywhere
public:
    explicit Prng(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }

private:
    std::uint64_t state_;
};

std::vector<std::string> vocabulary(Prng& rng, std::size_t words) {
    std::vector<std::string> vocab;
    for (std::size_t i = 0; i < words; ++i) {
        std::string w(3 + rng.below(8), 'a');
        for (char& c : w) c = static_cast<char>('a' + rng.below(26));
        vocab.push_back(std::move(w));
    }
    return vocab;
}

// Writes lines made by `line` until the file holds at least `bytes`.
template <class MakeLine>
bool write_lines(const std::string& path, std::uint64_t bytes, MakeLine line) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return false;
    std::string chunk;
    std::uint64_t written = 0;
    bool ok = true;
    while (ok && written < bytes) {
        chunk.clear();
        while (chunk.size() < kMiB) line(chunk);
        ok = std::fwrite(chunk.data(), 1, chunk.size(), f) == chunk.size();
        written += chunk.size();
    }
    return std::fclose(f) == 0 && ok;
}

// Lines with a random 10-character key and 1-8 words: `sort` has to compare
// most of each line, and duplicates are rare.
bool write_sort_input(const std::string& path, std::uint64_t bytes, std::uint64_t seed) {
    Prng rng(seed);
    const auto vocab = vocabulary(rng, 1000);
    return write_lines(path, bytes, [&](std::string& out) {
        for (int i = 0; i < 10; ++i) out += "abcdefghijklmnopqrstuvwxyz0123456789"[rng.below(36)];
        for (std::size_t n = 1 + rng.below(8); n > 0; --n) out += ' ' + vocab[rng.below(vocab.size())];
        out += '\n';
    });
}

// Text that compresses about 3:1: words from a skewed choice of a 4096-word
// vocabulary, with a random hex token on some lines.
bool write_compressible_input(const std::string& path, std::uint64_t bytes, std::uint64_t seed) {
    Prng rng(seed);
    const auto vocab = vocabulary(rng, 4096);
    return write_lines(path, bytes, [&](std::string& out) {
        for (std::size_t n = 4 + rng.below(12); n > 0; --n) {
            out += vocab[rng.below(1 + rng.below(vocab.size()))];
            out += ' ';
        }
        if (rng.below(8) == 0) {
            char token[24];
            std::snprintf(token, sizeof token, "%016llx", static_cast<unsigned long long>(rng.next()));
            out += token;
        }
        out += '\n';
    });
}


// A stdout that must equal a file we hold (a decompressed round trip).
void check_stdout_is(const Outcome& run, const std::string& expected) {
    INFO("stderr:\n" << tail_of(run.err_path));
    REQUIRE(run.exited_ok());
    const auto diff = files_differ(expected, run.out_path);
    INFO("round trip: " << diff.value_or("same"));
    CHECK(!diff);
}

// Compress natively and preloaded (same bytes), then decompress the
// preloaded result under the preload (the input again). Returns the
// statistics of the two preloaded runs.
std::pair<Stats, Stats> compression_round_trip(const Setting& s, const std::string& program,
                                              std::uint64_t input_bytes,
                                              const std::vector<std::string>& compress_args,
                                              const std::vector<std::string>& decompress_args) {
    const std::string input = s.tmp.file("input.txt");
    REQUIRE(write_compressible_input(input, input_bytes, 7));

    Command compress{{program}, "compress"};
    compress.argv.insert(compress.argv.end(), compress_args.begin(), compress_args.end());
    compress.argv.push_back(input);
    const Outcome native = s.native(compress);
    const Outcome preloaded = s.preloaded(compress);
    check_same_run(native, preloaded);
    const Stats compress_stats = check_stats_file(s, preloaded);
    report((program + " compress").c_str(), native, preloaded, compress_stats);

    Command decompress{{program}, "decompress"};
    decompress.argv.insert(decompress.argv.end(), decompress_args.begin(), decompress_args.end());
    decompress.argv.push_back(preloaded.out_path);
    const Outcome native_back = s.native(decompress);
    const Outcome preloaded_back = s.preloaded(decompress);
    check_stdout_is(native_back, input);
    check_stdout_is(preloaded_back, input);
    const Stats decompress_stats = check_stats_file(s, preloaded_back);
    report((program + " decompress").c_str(), native_back, preloaded_back, decompress_stats);
    return {compress_stats, decompress_stats};
}

}  // namespace

namespace {

// A program that writes a file: the runs match, the two files are the same
// byte for byte, and the preloaded run's statistics show managed memory.
void check_file_outputs(const Setting& s, const std::string& label, const Outcome& native, const Outcome& preloaded,
                        const std::string& native_file, const std::string& preload_file) {
    check_same_run(native, preloaded);
    const auto diff = files_differ(native_file, preload_file);
    INFO(label << ": output files " << diff.value_or("same"));
    CHECK(!diff);
    const Stats stats = check_stats_file(s, preloaded);
    report(label.c_str(), native, preloaded, stats);
    check_managed(stats);
}

}  // namespace

TEST_CASE("python3 runs a workload of lists dicts bytearrays hashing and a subprocess", "[preload][python]") {
    Setting s;
    require_program("/usr/bin/python3", "python3");
    const Stats stats = run_and_compare(s, "python3 workload.py", {{"/usr/bin/python3", s.src("workload.py")}, "python"});
    check_managed(stats);
    // The child Python inherited the preload and wrote its own file (%p).
    CHECK(count_stats_files(s.stats_dir) >= 2);
}

TEST_CASE("sort orders a 100 MiB file", "[preload][sort]") {
    Setting s;
    require_program("/usr/bin/sort", "coreutils");
    const std::string input = s.tmp.file("lines.txt");
    REQUIRE(write_sort_input(input, 100 * kMiB, 42));
    const std::string native_sorted = s.tmp.file("sorted-native.txt");
    const std::string preload_sorted = s.tmp.file("sorted-preload.txt");

    const Outcome native = s.native({{"/usr/bin/sort", "-o", native_sorted, input}, "sort"});
    const Outcome preloaded = s.preloaded({{"/usr/bin/sort", "-o", preload_sorted, input}, "sort"});
    CHECK(file_size(native_sorted) == file_size(input));
    check_file_outputs(s, "sort 100 MiB", native, preloaded, native_sorted, preload_sorted);
}

TEST_CASE("sort under policy=tier with a quarter of its memory on the host", "[preload][tier]") {
    // sort of 64 MiB holds about 70 MiB: tier_hot=16M keeps three quarters
    // of it on the device, and sort's passes over its buffers keep faulting
    // pages home and the policy demoting others.
    Setting s("policy=tier,tier_hot=16M,min_range=64K,arena=memfd,arena_size=1G,log=error");
    require_program("/usr/bin/sort", "coreutils");
    const std::string input = s.tmp.file("lines.txt");
    REQUIRE(write_sort_input(input, 64 * kMiB, 7));
    const std::string native_sorted = s.tmp.file("sorted-native.txt");
    const std::string preload_sorted = s.tmp.file("sorted-preload.txt");

    const Outcome native = s.native({{"/usr/bin/sort", "-o", native_sorted, input}, "sort"});
    const Outcome preloaded = s.preloaded({{"/usr/bin/sort", "-o", preload_sorted, input}, "sort"});
    check_file_outputs(s, "sort 64 MiB, tier", native, preloaded, native_sorted, preload_sorted);
    const Stats stats = read_stats(s.stats_dir, preloaded.pid);
    INFO(stats.summary());
    CHECK(stats.get("policy_rounds") > 0);
    // More than the budget went to the device, and pages came back on touch.
    CHECK(stats.get("pages_to_device") * 4096 > 16 * std::int64_t{kMiB});
    CHECK(stats.get("device_faults") > 0);
}

TEST_CASE("gzip compresses 64 MiB to the same bytes and back", "[preload][gzip]") {
    Setting s;
    require_program("/usr/bin/gzip", "gzip");
    const auto [compress, decompress] = compression_round_trip(s, "/usr/bin/gzip", 64 * kMiB, {"-n", "-c"}, {"-d", "-c"});
    // gzip keeps its buffers in static arrays (.bss), not on the heap: the
    // library manages the program's .bss when it is min_range or more.
    check_managed(compress);
    check_managed(decompress);
}

TEST_CASE("xz compresses 32 MiB to the same bytes and back", "[preload][xz]") {
    Setting s;
    require_program("/usr/bin/xz", "xz-utils");
    // Preset 1 (about 10 MB of match-finder tables) on 32 MiB: xz's random
    // access to its tables turns every chaos round into a storm of faults,
    // 10x slower than native (the default preset on 64 MiB: 90 s native).
    const auto [compress, decompress] =
        compression_round_trip(s, "/usr/bin/xz", 32 * kMiB, {"-c", "-T1", "-1"}, {"-d", "-c", "-T1"});
    check_managed(compress);
    check_managed(decompress);
}

TEST_CASE("sqlite3 builds and queries a database of more than 100 MB", "[preload][sqlite]") {
    Setting s;
    require_program("/usr/bin/sqlite3", "sqlite3");
    const std::string native_db = s.tmp.file("native.db");
    const std::string preload_db = s.tmp.file("preload.db");
    const std::string script = s.src("workload.sql");

    const Outcome native = s.native({{"/usr/bin/sqlite3", "-bail", native_db}, "sqlite", script});
    const Outcome preloaded = s.preloaded({{"/usr/bin/sqlite3", "-bail", preload_db}, "sqlite", script});
    CHECK(file_size(preload_db).value_or(0) >= 100'000'000);
    // The script has no randomness, so even the database files are the same.
    check_file_outputs(s, "sqlite3 workload.sql", native, preloaded, native_db, preload_db);
}

TEST_CASE("a multithreaded program with realloc mremap madvise and fork", "[preload][threads]") {
    Setting s;
    const Stats stats = run_and_compare(s, "workload_threads 64", {{s.in.workload_threads, "64"}, "threads"});
    check_managed(stats);
}

TEST_CASE("a bad UHMM_CONF costs one line on stderr and the program runs unmanaged", "[preload][conf]") {
    Setting s;
    const Command command{{s.in.workload_threads, "16"}, "conf"};
    const Outcome native = s.native(command);
    REQUIRE(native.exited_ok());
    struct Bad {
        const char* entry;
        const char* key;
    };
    for (const Bad bad : {Bad{"policy=bogus", "policy"}, Bad{"nosuchkey=1", "nosuchkey"},
                          Bad{"chaos_fraction=2", "chaos_fraction"}}) {
        INFO("UHMM_CONF entry " << bad.entry);
        Command c = command;
        c.label += std::string("-") + bad.key;
        const Outcome preloaded = run_preloaded(c, s.tmp.path(), s.in.preload,
                                                std::string("min_range=64K,arena=memfd,") + bad.entry);
        REQUIRE(preloaded.describe() == native.describe());
        const auto diff = files_differ(native.out_path, preloaded.out_path);
        INFO("stdout: " << diff.value_or("same"));
        CHECK(!diff);
        check_one_uhmm_line(preloaded, {bad.key});
    }
}

TEST_CASE("without userfaultfd permission the program runs unmanaged with one line", "[preload][nouffd]") {
    Setting s;
    // nobody must reach the program and the library: private copies, in a
    // directory it may enter (mkdtemp makes it 0700).
    REQUIRE(::chmod(s.tmp.path().c_str(), 0755) == 0);
    const std::string program = s.tmp.file("workload_threads");
    const std::string library = s.tmp.file("libuhmm_preload.so");
    REQUIRE(copy_file(s.in.workload_threads, program, 0755));
    REQUIRE(copy_file(s.in.preload, library, 0755));

    SysctlOverride no_unprivileged("/proc/sys/vm/unprivileged_userfaultfd", "0");
    if (!no_unprivileged.ok()) FAIL("cannot set vm.unprivileged_userfaultfd to 0");

    Command command{{program, "16"}, "nobody"};
    command.as_nobody = true;
    const Outcome native = run(command, s.tmp.path());
    INFO("native stderr:\n" << read_file(native.err_path));
    REQUIRE(native.exited_ok());
    // No stats= here: nobody cannot write into the test's directory.
    command.label += "-preload";
    const Outcome preloaded = run_preloaded(command, s.tmp.path(), library, s.in.chaos_conf);
    REQUIRE(preloaded.describe() == native.describe());
    const auto diff = files_differ(native.out_path, preloaded.out_path);
    INFO("stdout: " << diff.value_or("same"));
    CHECK(!diff);
    check_one_uhmm_line(preloaded, {"userfaultfd", "unmanaged"});
}
