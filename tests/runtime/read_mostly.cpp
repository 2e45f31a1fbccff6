// Read-mostly replicas under concurrent CPU writes: writer threads keep
// writing increasing sequence numbers to pages of their own while device
// threads (SoftDevices) keep reading the same pages through their replicas.
// A device read that starts after a write has completed never returns an
// older value: the write-protect fault drops the replica before the write
// goes through. Run by the TSan build (iterations drop under sanitizers).
//
// The writers' stores go through std::atomic_ref (relaxed): the devices read
// the same words from other threads (process_vm_readv, the copy engine).
#include <catch2/catch.hpp>

#include <uhmm/soft_device.hpp>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;
using mirror::SoftDevice;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

namespace {

void store(std::byte* at, std::uint64_t v) {
    std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(at)).store(v, std::memory_order_relaxed);
}
std::uint64_t load(const std::byte* at) {
    return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(const_cast<std::byte*>(at)))
        .load(std::memory_order_relaxed);
}
std::uint64_t word(const std::byte* p) {
    std::uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// What the threads saw (Catch's macros are for the main thread only).
struct Seen {
    std::atomic<std::size_t> stale{0};        // a device read older than a completed write
    std::atomic<std::size_t> garbage{0};      // a value no writer wrote, or a torn page
    std::atomic<std::size_t> errors{0};       // a device read or prefetch failed
    std::atomic<std::size_t> reads{0};
    std::atomic<bool> noted{false};
    std::string first;
    void note(std::string what) {
        if (!noted.exchange(true)) first = std::move(what);
    }
};

struct Config {
    std::size_t writers, pages_per_writer, readers, writes;
    bool prefetcher, toggler;
};

void run(const Config& c) {
    Watchdog dog(240, "read-mostly replicas under concurrent writes");
    auto rt = make_runtime();
    const std::size_t pages = c.writers * c.pages_per_writer, len = pages * kPage;
    ManagedPattern m(*rt, len);
    // Word 0 of each page: the sequence number (0 to start); the rest keeps
    // the pattern, to catch a torn or misplaced copy.
    for (std::size_t i = 0; i < pages; ++i) store(m.page(i), 0);
    std::string why;
    REQUIRE(!rt->advise(m.data(), len, Advice::set_read_mostly, {}, &why));
    std::vector<std::unique_ptr<SoftDevice>> devs;
    for (std::size_t r = 0; r < c.readers; ++r) {
        auto d = SoftDevice::create(*rt, m.data(), len);
        REQUIRE(d.ok());
        devs.push_back(std::move(d).value());
    }
    // published[w]: the last number writer w's stores have all completed for.
    std::vector<std::atomic<std::uint64_t>> published(c.writers);
    for (auto& p : published) p.store(0);
    std::atomic<std::size_t> writers_left{c.writers};
    Seen seen;

    std::vector<std::thread> threads;
    for (std::size_t w = 0; w < c.writers; ++w)
        threads.emplace_back([&, w] {
            for (std::uint64_t v = 1; v <= c.writes; ++v) {
                for (std::size_t k = 0; k < c.pages_per_writer; ++k) store(m.page(w * c.pages_per_writer + k), v);
                published[w].store(v, std::memory_order_release);
                // Give the devices time to replicate again between writes.
                if (v % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
                else std::this_thread::yield();
            }
            writers_left.fetch_sub(1);
        });
    for (std::size_t r = 0; r < c.readers; ++r)
        threads.emplace_back([&, r] {
            std::vector<std::byte> buf(kPage);
            SoftDevice& dev = *devs[r];
            for (std::size_t round = 0; writers_left.load() > 0 || round < 4; ++round) {
                for (std::size_t w = 0; w < c.writers; ++w) {
                    for (std::size_t k = 0; k < c.pages_per_writer; ++k) {
                        std::byte* page = m.page(w * c.pages_per_writer + k);
                        const std::uint64_t before = published[w].load(std::memory_order_acquire);
                        auto res = dev.read(page, kPage, buf.data());
                        seen.reads.fetch_add(1);
                        if (!res) {
                            seen.errors.fetch_add(1);
                            seen.note("device read: " + res.error().message());
                            continue;
                        }
                        const std::uint64_t got = word(buf.data());
                        if (got < before) {
                            seen.stale.fetch_add(1);
                            seen.note("page " + std::to_string(w * c.pages_per_writer + k) + ": read " +
                                      std::to_string(got) + " after " + std::to_string(before) + " was written");
                        }
                        if (got > c.writes ||
                            first_mismatch_at(buf.data() + 8, kPage - 8, addr_of(page) + 8) != kPage - 8) {
                            seen.garbage.fetch_add(1);
                            seen.note("page " + std::to_string(w * c.pages_per_writer + k) + ": garbage");
                        }
                    }
                }
            }
        });
    if (c.prefetcher)
        threads.emplace_back([&] {
            // prefetch to the device replicates the read-mostly pages too.
            while (writers_left.load() > 0) {
                auto p = rt->prefetch(m.data(), len, Target::device);
                if (!p) {
                    seen.errors.fetch_add(1);
                    seen.note("prefetch: " + p.error().message());
                }
                std::this_thread::sleep_for(std::chrono::microseconds(500));
            }
        });
    if (c.toggler)
        threads.emplace_back([&] {
            // Advice withdrawn and given again: replicas dropped meanwhile.
            while (writers_left.load() > 0) {
                (void)rt->advise(m.data(), len, Advice::unset_read_mostly);
                std::this_thread::sleep_for(std::chrono::microseconds(300));
                (void)rt->advise(m.data(), len, Advice::set_read_mostly);
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
            }
        });
    for (auto& t : threads) t.join();

    const auto st = rt->stats();
    INFO(seen.first);
    INFO("reads " << seen.reads.load() << ", replicas made " << st.replicas_made << ", invalidations "
                  << st.replica_invalidations << ", replicas now " << st.replicas);
    CHECK(seen.stale.load() == 0);
    CHECK(seen.garbage.load() == 0);
    CHECK(seen.errors.load() == 0);
    CHECK(st.replicas_made > 0);
    CHECK(st.replica_invalidations > 0);
    // Final contents, from the CPU and from every device.
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        CHECK(load(m.page(i)) == c.writes);
        CHECK(first_mismatch_at(m.page(i) + 8, kPage - 8, addr_of(m.page(i)) + 8) == kPage - 8);
    }
    std::vector<std::byte> all(len);
    for (auto& d : devs) {
        auto r = d->read(m.data(), len, all.data());
        REQUIRE(r.ok());
        for (std::size_t i = 0; i < pages; ++i) {
            INFO("device read, page " << i);
            CHECK(word(all.data() + i * kPage) == c.writes);
        }
    }
    CHECK(count_state(*rt, m.data(), len, PageState::host) == pages);
}

}  // namespace

TEST_CASE("read-mostly: device readers never see a value older than a completed CPU write", "[concurrency]") {
    run({.writers = 4, .pages_per_writer = 1, .readers = 2, .writes = scaled(2000), .prefetcher = false,
         .toggler = false});
}

TEST_CASE("read-mostly: the same with several pages per writer and prefetches replicating", "[concurrency]") {
    run({.writers = 3, .pages_per_writer = 3, .readers = 2, .writes = scaled(1000), .prefetcher = true,
         .toggler = false});
}

TEST_CASE("read-mostly: the same while the advice is withdrawn and given again", "[concurrency]") {
    run({.writers = 2, .pages_per_writer = 2, .readers = 2, .writes = scaled(1000), .prefetcher = true,
         .toggler = true});
}
