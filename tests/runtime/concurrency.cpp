// Application threads reading and writing managed memory while other threads
// migrate it to the device and back: no write is lost, no page is torn, every
// byte ends as the last write left it. Run by the TSan build (iteration
// counts drop under sanitizers, see scaled()).
//
// Application threads access the shared words through std::atomic_ref
// (relaxed): the test's own threads race on purpose, and C++ needs the
// accesses to be atomic for that to be defined. Each thread writes only the
// pages it owns (page % T == k) and keeps a shadow of them.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

constexpr std::size_t kWordsPerPage = kPage / sizeof(std::uint64_t);

std::uint64_t load(std::uint64_t* w) { return std::atomic_ref<std::uint64_t>(*w).load(std::memory_order_relaxed); }
void store(std::uint64_t* w, std::uint64_t v) {
    std::atomic_ref<std::uint64_t>(*w).store(v, std::memory_order_relaxed);
}

// Anomalies seen by a worker thread (Catch's macros are not thread-safe).
struct Anomalies {
    std::atomic<std::size_t> lost_writes{0};       // a word read back right after a write differs
    std::atomic<std::size_t> shadow_mismatch{0};   // an owned word differs from the shadow
    std::atomic<std::size_t> bad_results{0};       // migrate() sums wrong, failures, errors
    std::atomic<std::size_t> calls_failed{0};      // migrate() could not start
    std::atomic<std::size_t> busy_pages{0};        // pages another migration had (EBUSY), when allowed
    std::string first_bad_result;                  // written once, by the first that sets it
    std::atomic<bool> noted{false};
    std::string first_bad_word;                    // the first word that differed: where, wanted, got
    std::atomic<bool> word_noted{false};
    void note_word(const void* where, std::uint64_t want, std::uint64_t got, const char* what) {
        if (word_noted.exchange(true)) return;
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s at %p: wanted %#llx, read %#llx", what, where,
                      static_cast<unsigned long long>(want), static_cast<unsigned long long>(got));
        first_bad_word = buf;
    }
    void note(const MigrateResult& r) {
        if (noted.exchange(true)) return;
        first_bad_result = "requested " + std::to_string(r.requested) + " migrated " + std::to_string(r.migrated) +
                           " already_there " + std::to_string(r.already_there) + " failed " +
                           std::to_string(r.failed) + " error " + r.error.message();
    }
};

// One migrator: `iterations` random page-aligned sub-ranges of [p, p+pages),
// to the device or home at random.
// With `allow_busy` (several migrators at once), pages that another
// migration holds may fail with EBUSY; any other failure is an anomaly.
void migrator(Runtime& rt, std::byte* p, std::size_t pages, std::size_t iterations, std::uint64_t seed,
              Anomalies& an, std::size_t max_run, bool allow_busy) {
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < iterations; ++i) {
        const std::size_t first = rng() % pages;
        const std::size_t n = 1 + rng() % std::min(max_run, pages - first);
        const Target to = (rng() % 3 == 0) ? Target::host : Target::device;
        auto r = rt.migrate(p + first * kPage, n * kPage, to);
        if (!r.ok()) {
            an.calls_failed.fetch_add(1);
            continue;
        }
        const bool sums = r->requested == n && r->migrated + r->already_there + r->failed == n;
        const bool busy = allow_busy && r->failed != 0 && r->error == std::errc::device_or_resource_busy;
        if (busy) an.busy_pages.fetch_add(r->failed);
        if (!sums || (r->failed != 0 && !busy)) {
            an.bad_results.fetch_add(1);
            an.note(*r);
        }
    }
}

// Verify [p, p+pages) against the shadow; returns the first bad page or pages.
std::size_t first_bad_page(const std::byte* p, const std::vector<std::uint64_t>& shadow, std::size_t pages,
                           std::size_t* offset, std::string* detail = nullptr) {
    for (std::size_t i = 0; i < pages; ++i) {
        const std::byte* pg = p + i * kPage;
        const auto* sh = reinterpret_cast<const std::byte*>(shadow.data() + i * kWordsPerPage);
        if (std::memcmp(pg, sh, kPage) != 0) {
            std::size_t bad_words = 0;
            for (std::size_t o = 0; o < kPage; ++o)
                if (pg[o] != sh[o]) {
                    *offset = o;
                    break;
                }
            for (std::size_t w = 0; w < kWordsPerPage; ++w)
                bad_words += std::memcmp(pg + 8 * w, sh + 8 * w, 8) != 0;
            if (detail) {
                std::uint64_t want = 0, got = 0;
                const std::size_t wo = *offset / 8 * 8;
                std::memcpy(&want, sh + wo, 8);
                std::memcpy(&got, pg + wo, 8);
                char buf[200];
                std::snprintf(buf, sizeof buf, "word at +%zu wanted %#llx read %#llx; %zu of %zu words differ", wo,
                              static_cast<unsigned long long>(want), static_cast<unsigned long long>(got), bad_words,
                              kWordsPerPage);
                *detail = buf;
            }
            return i;
        }
    }
    return pages;
}

void run_stress(std::size_t threads, std::size_t migrators, std::size_t iterations) {
    Watchdog wd(120, "stress with " + std::to_string(threads) + " threads, " + std::to_string(migrators) +
                         " migrators");
    auto rt = make_runtime("arena=memfd,arena_size=64M,fault_threads=2");
    constexpr std::size_t pages = 256, len = pages * kPage;   // 1 MiB
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    auto* words = reinterpret_cast<std::uint64_t*>(p);
    std::vector<std::uint64_t> shadow(pages * kWordsPerPage);
    std::memcpy(shadow.data(), p, len);

    Anomalies an;
    std::atomic<bool> stop{false};
    std::atomic<std::size_t> writes{0}, reads{0};
    std::vector<std::thread> workers;
    for (std::size_t k = 0; k < threads; ++k) {
        workers.emplace_back([&, k] {
            std::mt19937_64 rng(1000 + k);
            std::uint64_t counter = 0;
            std::size_t owned = 0;
            for (std::size_t pg = k; pg < pages; pg += threads) ++owned;
            while (!stop.load(std::memory_order_relaxed)) {
                const std::size_t pg = k + threads * (rng() % owned);   // a page this thread owns
                const std::uint64_t op = rng() % 32;
                if (op == 0) {
                    // The whole page: a torn copy would mix two generations.
                    const std::uint64_t gen = (std::uint64_t{k + 1} << 56) | (++counter << 16);
                    for (std::size_t w = 0; w < kWordsPerPage; ++w) {
                        store(&words[pg * kWordsPerPage + w], gen | w);
                        shadow[pg * kWordsPerPage + w] = gen | w;
                    }
                    writes.fetch_add(1, std::memory_order_relaxed);
                } else if (op < 20) {
                    // One word, read back at once.
                    const std::size_t w = pg * kWordsPerPage + rng() % kWordsPerPage;
                    const std::uint64_t v = (std::uint64_t{k + 1} << 56) | (++counter << 16) | 0xBEEF;
                    store(&words[w], v);
                    shadow[w] = v;
                    if (const auto got = load(&words[w]); got != v) {
                        an.lost_writes.fetch_add(1);
                        an.note_word(&words[w], v, got, "read back after a write");
                    }
                    writes.fetch_add(1, std::memory_order_relaxed);
                } else if (op < 26) {
                    // An owned word against the shadow.
                    const std::size_t w = pg * kWordsPerPage + rng() % kWordsPerPage;
                    if (const auto got = load(&words[w]); got != shadow[w]) {
                        an.shadow_mismatch.fetch_add(1);
                        an.note_word(&words[w], shadow[w], got, "owned word against the shadow");
                    }
                    reads.fetch_add(1, std::memory_order_relaxed);
                } else {
                    // Anybody's word (the value is not checked: its owner may be writing it).
                    const std::size_t w = rng() % (pages * kWordsPerPage);
                    (void)load(&words[w]);
                    reads.fetch_add(1, std::memory_order_relaxed);
                }
            }
        });
    }
    std::vector<std::thread> movers;
    for (std::size_t m = 0; m < migrators; ++m)
        movers.emplace_back([&, m] { migrator(*rt, p, pages, iterations, 77 + m, an, 64, migrators > 1); });
    for (auto& t : movers) t.join();
    stop.store(true);
    for (auto& t : workers) t.join();

    const auto st = rt->stats();
    INFO("threads " << threads << " migrators " << migrators << " iterations " << iterations << ": writes "
                    << writes.load() << " reads " << reads.load() << " faults " << st.faults << " device_faults "
                    << st.device_faults << " write_waits " << st.write_waits << " pages_to_device "
                    << st.pages_to_device << " pages_to_host " << st.pages_to_host);
    INFO("first bad word: " << an.first_bad_word);
    INFO("first bad migrate result: " << an.first_bad_result << "; pages failed EBUSY (several migrators) "
                                       << an.busy_pages.load());
    CHECK(an.lost_writes.load() == 0);
    CHECK(an.shadow_mismatch.load() == 0);
    CHECK(an.bad_results.load() == 0);
    CHECK(an.calls_failed.load() == 0);
    CHECK(writes.load() > 0);
    CHECK(st.pages_to_device > 0);
    if (migrators == 1) CHECK(st.migrate_failed_pages == 0);

    // Every byte, first with the pages where the race left them, then after
    // one more trip of everything.
    // Where the runtime thinks each page is, before the check reads them.
    CHECK(device_but_cpu_mapped(*rt, p, len) == 0);
    const auto before = states(*rt, p, len);
    std::size_t off = 0;
    std::string detail;
    std::size_t bad = first_bad_page(p, shadow, pages, &off, &detail);
    INFO("first bad page " << bad << " at offset " << off << ": " << detail);
    if (bad < pages) {
        const auto now = rt->state(p + bad * kPage);
        INFO("that page: state before the check " << to_string(before[bad]) << ", after "
                                                   << (now.ok() ? to_string(*now) : "?") << ", CPU-mapped "
                                                   << cpu_mapped_pages(p + bad * kPage, kPage) << "; device_pages "
                                                   << rt->stats().device_pages);
        CHECK(bad == pages);
    }
    REQUIRE(migrate_ok(*rt, p, len, Target::device).failed == 0);
    CHECK(count_state(*rt, p, len, PageState::device) == pages);
    CHECK(cpu_mapped_pages(p, len) == 0);
    bad = first_bad_page(p, shadow, pages, &off);
    INFO("after a last trip: first bad page " << bad << " at offset " << off);
    CHECK(bad == pages);
    CHECK(eventually([&] { return rt->stats().device_pages == 0; }));
    CHECK(count_state(*rt, p, len, PageState::migrating) == 0);
    CHECK(!rt->release(p, len));
}

}  // namespace

TEST_CASE("writers, readers and a migrator: no lost write, no torn page", "[concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    run_stress(threads, 1, scaled(1500));
}

TEST_CASE("two migrators on overlapping ranges while threads write", "[concurrency]") {
    run_stress(4, 2, scaled(1000));
}

TEST_CASE("a write racing with the copy: the last value written is the value read", "[concurrency]") {
    Watchdog wd(120, "a write racing with the copy");
    auto rt = make_runtime("arena=memfd,arena_size=64M,fault_threads=2");
    constexpr std::size_t pages = 4, len = pages * kPage;
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    std::byte* page = p + kPage;   // page 1; its neighbours stay as they are
    auto* words = reinterpret_cast<std::uint64_t*>(page);
    const std::size_t iterations = scaled(4000);

    std::atomic<bool> stop{false};
    std::atomic<std::size_t> read_back_wrong{0}, bad_results{0}, migrations{0}, moved{0}, stalls{0};
    std::atomic<std::uint64_t> last{0}, progress{0};
    std::string first_bad;   // written by the mover only, read after join
    std::thread writer([&] {
        std::uint64_t i = 0;
        while (!stop.load(std::memory_order_relaxed)) {
            ++i;
            store(&words[0], i);
            store(&words[kWordsPerPage - 1], ~i);
            if (load(&words[0]) != i || load(&words[kWordsPerPage - 1]) != ~i) read_back_wrong.fetch_add(1);
            progress.store(i, std::memory_order_relaxed);
        }
        last.store(i);
    });
    std::thread mover([&] {
        for (std::size_t i = 0; i < iterations; ++i) {
            const Target to = (i % 8 == 7) ? Target::host : Target::device;
            auto r = rt->migrate(page, kPage, to);
            if (!r.ok()) {
                if (bad_results.fetch_add(1) == 0) first_bad = "migrate(): " + r.error().message();
            } else if (r->requested != 1 || r->failed != 0 || r->migrated + r->already_there != 1) {
                if (bad_results.fetch_add(1) == 0) {
                    first_bad = std::string(to == Target::host ? "to host" : "to device") + ": requested " +
                                std::to_string(r->requested) + " migrated " + std::to_string(r->migrated) +
                                " already_there " + std::to_string(r->already_there) + " failed " +
                                std::to_string(r->failed) + " error " + r->error.message();
                }
            } else {
                moved.fetch_add(r->migrated, std::memory_order_relaxed);
            }
            migrations.fetch_add(1, std::memory_order_relaxed);
            // Let the writer write (and so fault the page home) before the next
            // migration, so that every migration races with writes; a writer
            // that makes no progress for 10 s is stuck in a fault nobody serves.
            const std::uint64_t seen = progress.load(std::memory_order_relaxed);
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            while (progress.load(std::memory_order_relaxed) < seen + 2) {
                if (std::chrono::steady_clock::now() > deadline) {
                    stalls.fetch_add(1);
                    break;
                }
                std::this_thread::yield();
            }
        }
    });
    mover.join();
    // Let the writer see the page on the device at least once more.
    REQUIRE(migrate_ok(*rt, page, kPage, Target::device).failed == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stop.store(true);
    writer.join();

    const auto st = rt->stats();
    INFO("last " << last.load() << " migrations " << migrations.load() << " moved " << moved.load()
                 << " stalls " << stalls.load() << " write_waits " << st.write_waits
                 << " device_faults " << st.device_faults << " pages_to_device " << st.pages_to_device);
    INFO("first bad migrate result: " << first_bad);
    CHECK(read_back_wrong.load() == 0);
    CHECK(bad_results.load() == 0);
    CHECK(stalls.load() == 0);
    CHECK(moved.load() > iterations / 2);   // the page really moved, again and again
    CHECK(last.load() > 0);
    CHECK(load(&words[0]) == last.load());
    CHECK(load(&words[kWordsPerPage - 1]) == ~last.load());
    // Once more after a last trip.
    REQUIRE(migrate_ok(*rt, page, kPage, Target::device).failed == 0);
    CHECK(load(&words[0]) == last.load());
    CHECK(load(&words[kWordsPerPage - 1]) == ~last.load());
    // The words between, and the neighbouring pages, were never touched by the race.
    CHECK(first_mismatch(page + 8, kPage - 16) == kPage - 16);
    CHECK(first_mismatch(p, kPage) == kPage);
    CHECK(first_mismatch(p + 2 * kPage, 2 * kPage) == 2 * kPage);
}

TEST_CASE("threads reading device pages at once all get the right bytes", "[concurrency]") {
    Watchdog wd(120, "threads reading device pages at once");
    auto rt = make_runtime("arena=memfd,arena_size=64M,fault_threads=4");
    constexpr std::size_t pages = 2048, len = pages * kPage;   // 8 MiB
    auto a = rt->allocate(len);
    REQUIRE(a.ok());
    auto* p = static_cast<std::byte*>(*a);
    fill_pattern(p, len);
    const std::size_t rounds = scaled(8);
    for (std::size_t round = 0; round < rounds; ++round) {
        INFO("round " << round);
        REQUIRE(migrate_ok(*rt, p, len, Target::device).migrated == pages);
        std::atomic<std::size_t> bad{0};
        std::vector<std::thread> readers;
        for (std::size_t t = 0; t < 8; ++t) {
            readers.emplace_back([&, t] {
                // Each reader walks every page, starting at a different place,
                // so several threads fault on the same pages at once.
                for (std::size_t i = 0; i < pages; ++i) {
                    const std::size_t pg = (i + t * pages / 8) % pages;
                    const auto* w = reinterpret_cast<std::uint64_t*>(p + pg * kPage);
                    std::uint64_t expect = 0;
                    std::byte tmp[8];
                    fill_pattern_at(tmp, addr_of(p + pg * kPage + 8 * (t % kWordsPerPage)), 8);
                    std::memcpy(&expect, tmp, 8);
                    if (load(const_cast<std::uint64_t*>(w) + t % kWordsPerPage) != expect) bad.fetch_add(1);
                }
            });
        }
        for (auto& t : readers) t.join();
        CHECK(bad.load() == 0);
        CHECK(first_mismatch(p, len) == len);
        CHECK(eventually([&] { return rt->stats().device_pages == 0; }));
    }
}

// The kernel zaps a DONTNEED's pages only after its Remove event is read, so
// a migration can collect and copy a page the handler already called
// dropped, and a write after the madvise can land on a page the migration is
// about to zap. Both once lost writes here (see docs/ARCHITECTURE.md).
TEST_CASE("the application's MADV_DONTNEED racing with migrations: dropped pages read zero, others keep data",
          "[dontneed-race]") {
    Watchdog wd(120, "MADV_DONTNEED racing with migrations");
    auto rt = make_runtime("arena=memfd,arena_size=64M,fault_threads=2");
    constexpr std::size_t pages = 256, len = pages * kPage;
    Mapping m(len);
    REQUIRE(m);
    fill_pattern(m.data(), len);
    REQUIRE(!rt->manage(m.data(), len));
    auto* words = reinterpret_cast<std::uint64_t*>(m.data());
    std::vector<std::uint64_t> shadow(pages * kWordsPerPage);
    std::memcpy(shadow.data(), m.data(), len);
    const std::size_t ops = scaled(3000);

    Anomalies an;
    std::atomic<bool> stop{false};
    std::atomic<std::size_t> drops{0};
    std::thread app([&] {
        // The only thread that writes or drops: the shadow is its own.
        std::mt19937_64 rng(4242);
        for (std::size_t i = 0; i < ops; ++i) {
            const std::size_t pg = rng() % pages;
            const std::uint64_t op = rng() % 8;
            if (op == 0) {
                const std::size_t n = 1 + rng() % std::min<std::size_t>(16, pages - pg);
                if (::madvise(m.page(pg), n * kPage, MADV_DONTNEED) != 0) an.calls_failed.fetch_add(1);
                std::fill(shadow.begin() + static_cast<std::ptrdiff_t>(pg * kWordsPerPage),
                          shadow.begin() + static_cast<std::ptrdiff_t>((pg + n) * kWordsPerPage), 0);
                drops.fetch_add(1, std::memory_order_relaxed);
            } else if (op < 5) {
                const std::size_t w = pg * kWordsPerPage + rng() % kWordsPerPage;
                const std::uint64_t v = (i << 20) | 0xACE;
                store(&words[w], v);
                shadow[w] = v;
                if (const auto got = load(&words[w]); got != v) {
                    an.lost_writes.fetch_add(1);
                    an.note_word(&words[w], v, got, "read back after a write");
                }
            } else {
                const std::size_t w = pg * kWordsPerPage + rng() % kWordsPerPage;
                if (const auto got = load(&words[w]); got != shadow[w]) {
                    an.shadow_mismatch.fetch_add(1);
                    an.note_word(&words[w], shadow[w], got, "word against the shadow");
                }
            }
        }
        stop.store(true);
    });
    std::thread mover([&] {
        std::mt19937_64 rng(99);
        while (!stop.load(std::memory_order_relaxed)) {
            const std::size_t first = rng() % pages;
            const std::size_t n = 1 + rng() % std::min<std::size_t>(64, pages - first);
            const Target to = (rng() % 3 == 0) ? Target::host : Target::device;
            auto r = rt->migrate(m.page(first), n * kPage, to);
            if (!r.ok()) {
                an.calls_failed.fetch_add(1);
            } else if (r->requested != n || r->migrated + r->already_there + r->failed != n || r->failed != 0) {
                an.bad_results.fetch_add(1);
                an.note(*r);
            }
        }
    });
    app.join();
    mover.join();

    const auto st = rt->stats();
    INFO("first bad word: " << an.first_bad_word);
    INFO("drops " << drops.load() << " pages_discarded " << st.pages_discarded << " device_faults "
                  << st.device_faults << " first bad migrate result: " << an.first_bad_result);
    CHECK(an.lost_writes.load() == 0);
    CHECK(an.shadow_mismatch.load() == 0);
    CHECK(an.calls_failed.load() == 0);
    CHECK(an.bad_results.load() == 0);
    CHECK(device_but_cpu_mapped(*rt, m.data(), len) == 0);
    const auto before = states(*rt, m.data(), len);
    std::size_t off = 0;
    std::string detail;
    std::size_t bad = first_bad_page(m.data(), shadow, pages, &off, &detail);
    INFO("first bad page " << bad << " at offset " << off << ": " << detail);
    if (bad < pages) {
        const auto now = rt->state(m.page(bad));
        INFO("that page: state before the check " << to_string(before[bad]) << ", after "
                                                   << (now.ok() ? to_string(*now) : "?") << ", CPU-mapped "
                                                   << cpu_mapped_pages(m.page(bad), kPage) << "; device_pages "
                                                   << rt->stats().device_pages << ", states before the check: "
                                                   << count_state(before, PageState::device) << " device, "
                                                   << count_state(before, PageState::migrating) << " migrating");
        CHECK(bad == pages);
    }
    // No device page is leaked for dropped memory: after everything came
    // home, the arena holds nothing.
    INFO("after reading every page: " << count_state(*rt, m.data(), len, PageState::device)
                                      << " pages in state device, stats().device_pages "
                                      << rt->stats().device_pages << ", arena used_pages "
                                      << rt->stats().arena.used_pages);
    CHECK(eventually([&] { return rt->stats().device_pages == 0 && rt->stats().arena.used_pages == 0; }));
    REQUIRE(migrate_ok(*rt, m.data(), len, Target::device).failed == 0);
    bad = first_bad_page(m.data(), shadow, pages, &off);
    INFO("after a last trip: first bad page " << bad << " at offset " << off);
    CHECK(bad == pages);
}

TEST_CASE("mremap moving pages while migrations copy them: writes at the new place go through, data intact",
          "[concurrency][mremap-race]") {
    // A migration copies a page, then mremap moves the host page away before
    // the zap (its REMAP event not yet handled): the page was not there to
    // zap. It must not be recorded DEVICE, or the record would follow the
    // page to its new address while the host page, still write-protected,
    // sits there: every write would fault for good.
    Watchdog wd(120, "mremap racing with migrations");
    auto rt = make_runtime("arena=memfd,arena_size=64M,fault_threads=2");
    constexpr std::size_t pages = 64, len = pages * kPage;
    const std::size_t rounds = scaled(1200);
    Anomalies an;
    for (std::size_t round = 0; round < rounds; ++round) {
        Mapping m(len);
        REQUIRE(m);
        const auto salt = static_cast<std::uint8_t>(round);
        fill_salted(m.data(), len, salt);
        REQUIRE(!rt->manage(m.data(), len));
        std::atomic<bool> go{false};
        void* const base = m.data();   // the mover's copy: the main thread forgets `m` below
        std::thread mover([&, base] {
            while (!go.load()) std::this_thread::yield();
            // EFAULT: mremap came first and the range is gone, as it may.
            auto r = rt->migrate(base, len, Target::device);
            if (!r.ok() && r.error() != std::errc::bad_address) an.calls_failed.fetch_add(1);
        });
        go = true;
        // Let the migration get under way, then move everything elsewhere.
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(round % 64 * 5);
        while (std::chrono::steady_clock::now() < until) {
        }
        const std::uintptr_t orig = addr_of(m.data());
        void* to = ::mremap(m.data(), len, 2 * len, MREMAP_MAYMOVE);
        REQUIRE(to != MAP_FAILED);
        m.forget();
        mover.join();
        auto* p = static_cast<std::byte*>(to);
        // The data moved with it (the pattern of its old address)...
        if (first_mismatch_at(p, len, orig, salt) != len) an.shadow_mismatch.fetch_add(1);
        // ...and every page takes writes (a fault that never resolves would
        // trip the watchdog).
        for (std::size_t pg = 0; pg < 2 * pages; ++pg) p[pg * kPage + 8] = std::byte{0x5a};
        for (std::size_t pg = 0; pg < 2 * pages; ++pg)
            if (p[pg * kPage + 8] != std::byte{0x5a}) an.lost_writes.fetch_add(1);
        ::munmap(to, 2 * len);
    }
    CHECK(an.calls_failed.load() == 0);
    CHECK(an.shadow_mismatch.load() == 0);
    CHECK(an.lost_writes.load() == 0);
}
