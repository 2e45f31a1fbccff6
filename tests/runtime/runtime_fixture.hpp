// Test fixtures for uhmm::Runtime: owned anonymous mappings, a byte pattern
// that tells every page apart (it depends on the address it was written at, so
// a page copied to the wrong place, a stale page or a torn copy shows), page
// state helpers, and a child-process waiter that never hangs the test.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <uhmm/runtime.hpp>

namespace uhmm::test {

inline constexpr std::size_t kPage = 4096;
inline constexpr std::size_t KiB = 1024, MiB = 1024 * 1024;

// ---- sanitizers: fewer iterations, same checks ----------------------------------

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

// `n` iterations normally, n / 4 (at least 1) under a sanitizer; the
// environment variable UHMM_TEST_SCALE (a percentage) overrides both.
inline std::size_t scaled(std::size_t n) {
    if (const char* s = std::getenv("UHMM_TEST_SCALE")) {
        const long pct = std::strtol(s, nullptr, 10);
        if (pct > 0) return std::max<std::size_t>(1, n * static_cast<std::size_t>(pct) / 100);
    }
    return kSanitized ? std::max<std::size_t>(1, n / 4) : n;
}

// ---- waiting ---------------------------------------------------------------------

// Waits up to `ms` for `pred`: the runtime handles madvise/munmap/mremap events
// right after their caller returns, so their effect on the runtime's
// statistics shows a moment later.
template <class Pred> bool eventually(Pred pred, int ms = 10000) {
    for (int i = 0; i < ms; ++i) {
        if (pred()) return true;
        ::usleep(1000);
    }
    return pred();
}

// Turns a hang into a failure: if not destroyed within `seconds`, prints what
// was stuck and ends the process with status 1 (a deadlocked thread cannot be
// joined, and a binary that hangs until meson's timeout says nothing).
class Watchdog {
public:
    Watchdog(int seconds, std::string what) : what_(std::move(what)) {
        if (kSanitized) seconds *= 2;
        thread_ = std::thread([this, seconds] {
            std::unique_lock l(m_);
            if (!cv_.wait_for(l, std::chrono::seconds(seconds), [this] { return done_; })) {
                std::fprintf(stderr,
                             "FAILED (watchdog): %s: still running after %d s; a thread is stuck "
                             "(look at /proc/%d/task/*/stack)\n",
                             what_.c_str(), seconds, static_cast<int>(::getpid()));
                std::fflush(nullptr);
                std::_Exit(1);
            }
        });
    }
    ~Watchdog() {
        {
            std::lock_guard l(m_);
            done_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;

private:
    std::string what_;
    std::mutex m_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;
};

// ---- memory ----------------------------------------------------------------------

// A private anonymous mapping (optionally aligned), unmapped on destruction
// unless forgotten.
class Mapping {
public:
    explicit Mapping(std::size_t len, std::size_t align = kPage, int flags = MAP_PRIVATE | MAP_ANONYMOUS)
        : len_(len) {
        const std::size_t extra = align > kPage ? align : 0;
        void* p = ::mmap(nullptr, len + extra, PROT_READ | PROT_WRITE, flags, -1, 0);
        if (p == MAP_FAILED) return;
        auto a = reinterpret_cast<std::uintptr_t>(p);
        if (extra) {
            const std::uintptr_t aligned = (a + align - 1) & ~(align - 1);
            if (aligned > a) ::munmap(p, aligned - a);
            const std::uintptr_t end = a + len + extra;
            if (end > aligned + len) ::munmap(reinterpret_cast<void*>(aligned + len), end - aligned - len);
            a = aligned;
        }
        base_ = reinterpret_cast<std::byte*>(a);
    }
    ~Mapping() {
        if (base_) ::munmap(base_, len_);
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;

    explicit operator bool() const { return base_ != nullptr; }
    std::byte* data() const { return base_; }
    std::size_t size() const { return len_; }
    std::size_t pages() const { return len_ / kPage; }
    std::byte* page(std::size_t i) const { return base_ + i * kPage; }
    void forget() { base_ = nullptr; }   // the test unmapped or moved it itself

private:
    std::byte* base_ = nullptr;
    std::size_t len_;
};

inline std::uintptr_t addr_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

// ---- the pattern -------------------------------------------------------------------

inline std::uint8_t pattern_byte(std::uintptr_t addr, std::uint8_t salt = 0) {
    const std::uintptr_t page = addr / kPage, off = addr % kPage;
    return static_cast<std::uint8_t>((page * 131u) ^ (off * 7u) ^ (off >> 8) ^ (salt * 29u + salt));
}

// Writes the pattern of the addresses [addr, addr+len) into dst.
inline void fill_pattern_at(std::byte* dst, std::uintptr_t addr, std::size_t len, std::uint8_t salt = 0) {
    for (std::size_t i = 0; i < len; ++i) dst[i] = std::byte{pattern_byte(addr + i, salt)};
}
inline void fill_pattern(std::byte* p, std::size_t len) { fill_pattern_at(p, addr_of(p), len); }
// Another pattern for the same addresses (salt != 0 differs in every byte).
inline void fill_salted(std::byte* p, std::size_t len, std::uint8_t salt) { fill_pattern_at(p, addr_of(p), len, salt); }

// Index of the first byte of [p, p+len) that differs from the pattern the
// bytes had when they lived at `orig`, or len.
inline std::size_t first_mismatch_at(const std::byte* p, std::size_t len, std::uintptr_t orig,
                                     std::uint8_t salt = 0) {
    for (std::size_t i = 0; i < len; ++i)
        if (p[i] != std::byte{pattern_byte(orig + i, salt)}) return i;
    return len;
}
inline std::size_t first_mismatch(const std::byte* p, std::size_t len) {
    return first_mismatch_at(p, len, addr_of(p));
}
inline std::size_t first_mismatch_salted(const std::byte* p, std::size_t len, std::uint8_t salt) {
    return first_mismatch_at(p, len, addr_of(p), salt);
}

// Index of the first non-zero byte, or len.
inline std::size_t first_nonzero(const std::byte* p, std::size_t len) {
    for (std::size_t i = 0; i < len; ++i)
        if (p[i] != std::byte{0}) return i;
    return len;
}

// The pagemap entries of [p, p+len), empty when unreadable.
inline std::vector<std::uint64_t> pagemap_entries(const void* p, std::size_t len) {
    const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {};
    std::vector<std::uint64_t> e(len / kPage);
    const auto off = static_cast<off_t>(addr_of(p) / kPage * sizeof(std::uint64_t));
    const ssize_t want = static_cast<ssize_t>(e.size() * sizeof(std::uint64_t));
    const ssize_t got = ::pread(fd, e.data(), static_cast<std::size_t>(want), off);
    ::close(fd);
    if (got != want) return {};
    return e;
}

// Bit 63 present, bit 62 swapped: the CPU page table maps the page.
inline bool cpu_mapped(std::uint64_t pagemap_entry) { return (pagemap_entry >> 62) & 3; }

// How many pages of [p, p+len) the CPU page table maps now (present or
// swapped, from /proc/self/pagemap): a device page must not be one of them
// (the runtime zapped it), or nothing was moved at all. -1 when unreadable.
inline long cpu_mapped_pages(const void* p, std::size_t len) {
    const auto e = pagemap_entries(p, len);
    if (e.empty()) return -1;
    return static_cast<long>(std::count_if(e.begin(), e.end(), cpu_mapped));
}

// Pages of [p, p+len) that the runtime calls DEVICE while the CPU page
// table still maps them: a CPU access would then bypass the runtime (the
// device copy is stale or the CPU page is). Must be 0 whenever no migration
// is in flight. -1 when pagemap is unreadable.
inline long device_but_cpu_mapped(const Runtime& rt, const void* p, std::size_t len) {
    std::vector<PageState> st(len / kPage, PageState::none);
    if (rt.residency(p, len, st)) return -1;
    const auto e = pagemap_entries(p, len);
    if (e.empty()) return -1;
    long n = 0;
    for (std::size_t i = 0; i < e.size(); ++i) n += st[i] == PageState::device && cpu_mapped(e[i]);
    return n;
}

// ---- the runtime ---------------------------------------------------------------------

inline constexpr const char* kMemfdConf = "arena=memfd,arena_size=64M";

inline std::unique_ptr<Runtime> make_runtime(const std::string& text = kMemfdConf) {
    std::string why;
    auto cfg = RuntimeConfig::parse(text, &why);
    INFO("config '" << text << "': " << why);
    REQUIRE(cfg.ok());
    auto rt = Runtime::create(*cfg, &why);
    INFO("Runtime::create: " << rt.error().message() << ": " << why);
    REQUIRE(rt.ok());
    return std::move(rt).value();
}

// The usual start of a case: `len` bytes of private anonymous memory holding
// the pattern, managed by `rt`.
struct ManagedPattern : Mapping {
    ManagedPattern(Runtime& rt, std::size_t len) : Mapping(len) {
        REQUIRE(*this);
        fill_pattern(data(), len);
        REQUIRE(!rt.manage(data(), len));
    }
};

inline std::vector<PageState> states(const Runtime& rt, const void* p, std::size_t len) {
    std::vector<PageState> out(len / kPage, PageState::none);
    const auto ec = rt.residency(p, len, out);
    INFO("residency: " << ec.message());
    REQUIRE(!ec);
    return out;
}

inline std::size_t count_state(const std::vector<PageState>& v, PageState s) {
    return static_cast<std::size_t>(std::count(v.begin(), v.end(), s));
}

inline std::size_t count_state(const Runtime& rt, const void* p, std::size_t len, PageState s) {
    return count_state(states(rt, p, len), s);
}

// The same without REQUIRE (for eventually()): nullopt when residency() fails.
inline std::optional<std::size_t> try_count_state(const Runtime& rt, const void* p, std::size_t len, PageState s) {
    std::vector<PageState> out(len / kPage, PageState::none);
    if (rt.residency(p, len, out)) return std::nullopt;
    return count_state(out, s);
}

// Migrate and require that the call itself started.
inline MigrateResult migrate_ok(Runtime& rt, void* p, std::size_t len, Target to) {
    auto r = rt.migrate(p, len, to);
    INFO("migrate: " << r.error().message());
    REQUIRE(r.ok());
    return *r;
}

// allocate() that must succeed, the memory filled with the address pattern
// (every page touched: host-resident).
inline std::byte* allocate_filled(Runtime& rt, std::size_t len) {
    auto a = rt.allocate(len);
    INFO("allocate: " << a.error().message());
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    return p;
}

// The runtime's range that contains `p`, if any.
inline std::optional<RangeInfo> range_containing(const Runtime& rt, const void* p) {
    const auto a = addr_of(p);
    for (const auto& r : rt.ranges())
        if (a >= r.start && a < r.start + r.len) return r;
    return std::nullopt;
}

// ---- children ----------------------------------------------------------------------

// Waits up to `seconds` for `pid`; on timeout kills it (SIGKILL), reaps it and
// returns nullopt. Otherwise returns the wait status.
inline std::optional<int> wait_child(pid_t pid, int seconds = 30) {
    const int polls = seconds * 1000;
    for (int i = 0; i < polls; ++i) {
        int status = 0;
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        if (r < 0) return std::nullopt;
        ::usleep(1000);
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return std::nullopt;
}

// The exit code of a child that called _exit(code), or -1 (killed by a signal
// or hung: the caller's INFO says which).
inline int child_exit_code(std::optional<int> status) {
    if (!status) return -1;
    if (WIFEXITED(*status)) return WEXITSTATUS(*status);
    return -1000 - (WIFSIGNALED(*status) ? WTERMSIG(*status) : 0);
}

}  // namespace uhmm::test
