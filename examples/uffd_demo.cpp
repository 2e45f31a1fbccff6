// The main job until the runtime lands: a real workload over memory whose
// pages uhmm's fault monitor materialises on demand.
//
// A 256 MiB table of 64-bit values is registered with a userfaultfd; nothing
// is in it. Four threads then sum it in interleaved slices; every first touch
// of a page is a fault that the monitor serves by computing the page's values
// and placing them with UFFDIO_COPY. The same sum is computed natively over
// ordinary memory, and the report compares the two: result, time, faults.
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include <uhmm/uffd.hpp>

using namespace uhmm;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kBytes = 256u << 20;
constexpr std::size_t kWords = kBytes / 8;
constexpr unsigned kThreads = 4;

std::uint64_t value_at(std::size_t i) { return i * 0x9E3779B97F4A7C15ull ^ (i >> 7); }

void fill_page(std::uint64_t* dst, std::size_t first_word) {
    for (std::size_t w = 0; w < kPage / 8; ++w) dst[w] = value_at(first_word + w);
}

class ComputedPages : public uffd::Handler {
public:
    ComputedPages(uffd::Uffd& u, std::byte* base) : u_(u), base_(base) {}
    uffd::FaultDisposition on_fault(const uffd::PageFault& f) noexcept override {
        const std::size_t offset = (f.address & ~(kPage - 1)) - reinterpret_cast<std::uintptr_t>(base_);
        alignas(4096) static thread_local std::uint64_t page[kPage / 8];
        fill_page(page, offset / 8);
        const auto out = u_.copy(base_ + offset, page, kPage);
        if (out.status == uffd::Status::retry) return uffd::FaultDisposition::retry_later;
        if (out.status != uffd::Status::done && out.status != uffd::Status::exists) u_.wake(base_ + offset, kPage);
        served.fetch_add(out.status == uffd::Status::done, std::memory_order_relaxed);
        return uffd::FaultDisposition::resolved;
    }
    std::atomic<std::uint64_t> served{0};

private:
    uffd::Uffd& u_;
    std::byte* base_;
};

std::uint64_t parallel_sum(const std::uint64_t* table) {
    std::vector<std::thread> threads;
    std::vector<std::uint64_t> partial(kThreads);
    for (unsigned t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            std::uint64_t s = 0;
            // Interleaved 1 MiB slices: the threads fault all over the table.
            constexpr std::size_t slice = (1u << 20) / 8;
            for (std::size_t start = t * slice; start < kWords; start += kThreads * slice)
                for (std::size_t i = start; i < start + slice; ++i) s += table[i] * (i | 1);
            partial[t] = s;
        });
    for (auto& th : threads) th.join();
    std::uint64_t total = 0;
    for (auto p : partial) total += p;
    return total;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

int main() {
    const auto& probe = uffd::probe();
    if (!probe.available) {
        std::fprintf(stderr, "uffd_demo: %s\n", probe.reason.c_str());
        return 1;
    }

    // Native: ordinary memory, filled by the program itself.
    auto* native = static_cast<std::uint64_t*>(::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE,
                                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    auto t0 = Clock::now();
    for (std::size_t p = 0; p < kBytes / kPage; ++p) fill_page(native + p * (kPage / 8), p * (kPage / 8));
    const std::uint64_t want = parallel_sum(native);
    const double native_s = seconds_since(t0);
    ::munmap(native, kBytes);

    // Under uhmm: the same table, materialised by the fault monitor.
    auto* table = static_cast<std::byte*>(::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE,
                                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ::madvise(table, kBytes, MADV_NOHUGEPAGE);
    auto opened = uffd::Uffd::open();
    if (!opened) {
        std::fprintf(stderr, "uffd_demo: %s\n", opened.error().message().c_str());
        return 1;
    }
    auto& u = *opened;
    if (auto r = u.register_range(table, kBytes, uffd::Mode::missing); !r) {
        std::fprintf(stderr, "uffd_demo: register: %s\n", r.error().message().c_str());
        return 1;
    }
    ComputedPages handler(u, table);
    uffd::Monitor monitor(u, handler, {.threads = 1});
    if (auto ec = monitor.start()) {
        std::fprintf(stderr, "uffd_demo: monitor: %s\n", ec.message().c_str());
        return 1;
    }
    t0 = Clock::now();
    const std::uint64_t got = parallel_sum(reinterpret_cast<const std::uint64_t*>(table));
    const double managed_s = seconds_since(t0);
    const auto st = monitor.stats();
    monitor.stop();
    ::munmap(table, kBytes);

    const auto pages = kBytes / kPage;
    std::printf("uhmm demo: %u threads summing a %zu MiB table whose pages the fault monitor computes on demand\n",
                kThreads, kBytes >> 20);
    std::printf("  userfaultfd via %s; features: %s\n",
                probe.path == uffd::OpenPath::syscall ? "syscall" : "/dev/userfaultfd",
                uffd::feature_names(u.features()).c_str());
    std::printf("  native  (fill + sum):      %8.3f s\n", native_s);
    std::printf("  managed (fault-fill + sum): %8.3f s   (%.2fx native)\n", managed_s, managed_s / native_s);
    std::printf("  faults: %llu messages in %llu reads, %llu pages placed of %zu, %.1f us per page\n",
                static_cast<unsigned long long>(st.faults), static_cast<unsigned long long>(st.reads),
                static_cast<unsigned long long>(handler.served.load()), pages, managed_s * 1e6 / pages);
    std::printf("  result: %s (sum %016llx)\n", got == want ? "identical" : "MISMATCH",
                static_cast<unsigned long long>(got));
    return got == want && handler.served.load() == pages ? 0 : 1;
}
