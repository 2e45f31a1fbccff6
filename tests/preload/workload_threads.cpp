// workload_threads [MiB]: an ordinary multithreaded program for the preload
// tests. It knows nothing of uhmm; run natively and under libuhmm_preload.so it
// must print the same lines. It exercises what a preloaded runtime has to keep
// meaning the same: malloc'd and std::vector buffers touched by several
// threads, realloc growth (mremap of a managed block), raw mmap + mremap,
// madvise(MADV_DONTNEED) reading back zero, and a fork() whose child checks
// the memory it inherited while the parent overwrites its own copy.
//
// Determinism: every buffer's contents are a function of (seed, word index),
// never of an address or of thread timing, and each thread writes its result
// into its own slot, printed in order after the join. Any mismatch prints a
// line starting with "FAIL" and the exit status is 1.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kPageSize = 4096;
constexpr int kThreads = 4;

// splitmix64's finaliser: a word of the pattern from (seed, index) alone, so
// that any slice of a buffer can be checked or rebuilt on its own.
std::uint64_t pattern_word(std::uint64_t seed, std::uint64_t index) {
    std::uint64_t z = seed * 0x9e3779b97f4a7c15ULL + index + 1;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void fill(std::uint64_t* words, std::size_t first, std::size_t last, std::uint64_t seed) {
    for (std::size_t i = first; i < last; ++i) words[i] = pattern_word(seed, i);
}

// The first word in [first, last) that is not the pattern, or last.
std::size_t first_mismatch(const std::uint64_t* words, std::size_t first, std::size_t last,
                           std::uint64_t seed) {
    for (std::size_t i = first; i < last; ++i)
        if (words[i] != pattern_word(seed, i)) return i;
    return last;
}

// An order-sensitive 64-bit checksum (FNV-1a over words, then a final mix).
// (A span, not a const pointer: GCC 12 takes a const pointer argument to
// malloc'd memory for a read of uninitialised bytes.)
std::uint64_t checksum(std::span<const std::uint64_t> words) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (std::uint64_t w : words) h = (h ^ w) * 0x100000001b3ULL;
    return pattern_word(h, words.size());
}

// Results are collected, not printed, by the threads: the printing order is
// fixed whatever the scheduling.
struct ThreadResult {
    std::uint64_t malloc_sum = 0;
    std::uint64_t realloc_sum = 0;
    std::uint64_t vector_sum = 0;
    bool dontneed_zero = false;
    std::string failure;   // empty when every check held
};

std::string fail_text(const char* what, std::size_t word) {
    return std::string(what) + " at word " + std::to_string(word);
}

// MADV_DONTNEED on whole pages inside [words, words + count): they must read
// zero afterwards. The pages are then refilled with the pattern, so that the
// checksum does not depend on where malloc put the block (which pages are
// whole depends on the block's alignment).
bool dontneed_reads_zero(std::uint64_t* words, std::size_t count, std::uint64_t seed) {
    const auto begin = reinterpret_cast<std::uintptr_t>(words + count / 4);
    const auto end = reinterpret_cast<std::uintptr_t>(words + count / 2);
    const std::uintptr_t lo = (begin + kPageSize - 1) & ~(kPageSize - 1);
    const std::uintptr_t hi = end & ~(kPageSize - 1);
    if (hi <= lo) return false;
    if (::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED) != 0) return false;
    const auto* zero = reinterpret_cast<const std::uint64_t*>(lo);
    bool all_zero = true;
    for (std::size_t i = 0; i < (hi - lo) / sizeof(std::uint64_t); ++i) all_zero &= zero[i] == 0;
    const std::size_t first = (lo - reinterpret_cast<std::uintptr_t>(words)) / sizeof(std::uint64_t);
    const std::size_t last = (hi - reinterpret_cast<std::uintptr_t>(words)) / sizeof(std::uint64_t);
    fill(words, first, last, seed);
    return all_zero;
}

// One thread: a malloc'd block filled, grown with realloc (the old part must
// survive the move), partly discarded with MADV_DONTNEED; and a vector grown
// past its capacity.
void thread_work(int index, std::size_t bytes, ThreadResult& out) {
    const std::uint64_t seed = 1000 + static_cast<std::uint64_t>(index);
    const std::size_t words = bytes / sizeof(std::uint64_t);

    auto* block = static_cast<std::uint64_t*>(std::malloc(bytes));
    if (block == nullptr) { out.failure = "malloc failed"; return; }
    fill(block, 0, words, seed);
    out.malloc_sum = checksum({block, words});

    auto* grown = static_cast<std::uint64_t*>(std::realloc(block, 2 * bytes));
    if (grown == nullptr) { std::free(block); out.failure = "realloc failed"; return; }
    block = grown;
    if (std::size_t at = first_mismatch(block, 0, words, seed); at != words)
        out.failure = fail_text("realloc lost data", at);
    fill(block, words, 2 * words, seed);
    out.dontneed_zero = dontneed_reads_zero(block, 2 * words, seed);
    out.realloc_sum = checksum({block, 2 * words});
    std::free(block);

    std::vector<std::uint64_t> vec(words / 2);
    fill(vec.data(), 0, vec.size(), seed + 77);
    vec.resize(words);   // reallocates and copies: the old half must come along
    if (std::size_t at = first_mismatch(vec.data(), 0, words / 2, seed + 77); at != words / 2)
        out.failure = fail_text("vector growth lost data", at);
    fill(vec.data(), words / 2, words, seed + 77);
    out.vector_sum = checksum(vec);
}

void* map_anonymous(std::size_t bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
}

// Raw mmap, mremap to three times the size (free to move), then shrink back.
// Returns false (after printing why) when the data did not follow.
bool mremap_work(std::size_t bytes) {
    const std::uint64_t seed = 5000;
    const std::size_t words = bytes / sizeof(std::uint64_t);
    void* region = map_anonymous(bytes);
    if (region == nullptr) { std::printf("FAIL mmap\n"); return false; }
    fill(static_cast<std::uint64_t*>(region), 0, words, seed);

    void* grown = ::mremap(region, bytes, 3 * bytes, MREMAP_MAYMOVE);
    if (grown == MAP_FAILED) { std::printf("FAIL mremap grow\n"); ::munmap(region, bytes); return false; }
    auto* w = static_cast<std::uint64_t*>(grown);
    bool ok = true;
    if (std::size_t at = first_mismatch(w, 0, words, seed); at != words) {
        std::printf("FAIL mremap grow lost data at word %zu\n", at);
        ok = false;
    }
    fill(w, words, 3 * words, seed);
    std::printf("mremap grown checksum %016" PRIx64 "\n", checksum({w, 3 * words}));

    void* shrunk = ::mremap(grown, 3 * bytes, bytes, 0);
    if (shrunk == MAP_FAILED) { std::printf("FAIL mremap shrink\n"); ::munmap(grown, 3 * bytes); return false; }
    std::printf("mremap shrunk checksum %016" PRIx64 "\n",
                checksum({static_cast<const std::uint64_t*>(shrunk), words}));
    ::munmap(shrunk, bytes);
    return ok;
}

// fork(): the child must see the fork-time data while the parent overwrites
// its own copy, and its own writes must stick. The child's exit status says
// what it saw: 0 good, 2 bad inherited data, 3 own write lost.
int child_check(std::uint64_t* words, std::size_t count, std::uint64_t seed) {
    if (first_mismatch(words, 0, count, seed) != count) return 2;
    fill(words, 0, count / 2, seed + 1);
    if (first_mismatch(words, 0, count / 2, seed + 1) != count / 2) return 3;
    return 0;
}

bool fork_work(std::size_t bytes) {
    const std::uint64_t seed = 7000;
    const std::size_t words = bytes / sizeof(std::uint64_t);
    auto* shared = static_cast<std::uint64_t*>(std::malloc(bytes));
    if (shared == nullptr) { std::printf("FAIL malloc for fork\n"); return false; }
    fill(shared, 0, words, seed);
    std::fflush(stdout);   // the child must not print the parent's buffered lines again

    const pid_t child = ::fork();
    if (child < 0) { std::printf("FAIL fork\n"); std::free(shared); return false; }
    if (child == 0) std::exit(child_check(shared, words, seed));   // exit(): at-exit handlers run

    fill(shared, 0, words, seed + 2);   // the parent's writes, racing the child's reads
    int status = 0;
    const bool waited = ::waitpid(child, &status, 0) == child;
    const bool parent_ok = first_mismatch(shared, 0, words, seed + 2) == words;
    std::free(shared);
    if (!waited || !WIFEXITED(status)) { std::printf("FAIL fork child did not exit normally\n"); return false; }
    std::printf("fork child exit status %d, parent copy %s\n", WEXITSTATUS(status),
                parent_ok ? "intact" : "CHANGED");
    if (WEXITSTATUS(status) != 0 || !parent_ok) { std::printf("FAIL fork\n"); return false; }
    return true;
}

bool threads_work(std::size_t bytes) {
    std::array<ThreadResult, kThreads> results;
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i)
        threads.emplace_back(thread_work, i, bytes, std::ref(results[static_cast<std::size_t>(i)]));
    for (auto& t : threads) t.join();

    bool ok = true;
    for (int i = 0; i < kThreads; ++i) {
        const ThreadResult& r = results[static_cast<std::size_t>(i)];
        std::printf("thread %d malloc %016" PRIx64 " realloc %016" PRIx64 " vector %016" PRIx64
                    " dontneed %s\n",
                    i, r.malloc_sum, r.realloc_sum, r.vector_sum, r.dontneed_zero ? "zero" : "NOT-ZERO");
        if (!r.failure.empty()) std::printf("FAIL thread %d: %s\n", i, r.failure.c_str());
        ok &= r.failure.empty() && r.dontneed_zero;
    }
    return ok;
}

// The scale in MiB from argv[1] (default 64): each thread's block starts at
// scale/4 MiB, the mmap region at scale/4 MiB, the fork buffer at scale/2 MiB.
std::size_t scale_mib(int argc, char** argv) {
    if (argc < 2) return 64;
    const long v = std::strtol(argv[1], nullptr, 10);
    return v >= 4 && v <= 4096 ? static_cast<std::size_t>(v) : 64;
}

}  // namespace

int main(int argc, char** argv) {
    const std::size_t scale = scale_mib(argc, argv) * kMiB;
    std::printf("workload_threads scale %zu MiB, %d threads\n", scale / kMiB, kThreads);
    bool ok = threads_work(scale / 4);
    ok &= mremap_work(scale / 4);
    ok &= fork_work(scale / 2);
    std::printf("%s\n", ok ? "all checks passed" : "FAIL some checks failed");
    return ok ? 0 : 1;
}
