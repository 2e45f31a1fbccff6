// Managed ranges: the table lives in its own anonymous mapping (see the header).
#include "space/managed_range.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <new>

namespace uhmm::space {

namespace {
constexpr std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }
}  // namespace

ManagedRange* ManagedRange::create(std::uintptr_t start, std::size_t pages, bool owned) noexcept {
    const std::size_t blocks = (pages + kBlockPages - 1) / kBlockPages;
    const std::size_t header = round_up(sizeof(ManagedRange), alignof(std::mutex));
    const std::size_t locks = round_up(blocks * sizeof(std::mutex), alignof(PageEntry));
    const std::size_t bytes = round_up(header + locks + pages * sizeof(PageEntry), kPage);
    void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return nullptr;
    auto* base = static_cast<std::byte*>(mem);
    auto* lock_array = reinterpret_cast<std::mutex*>(base + header);
    for (std::size_t b = 0; b < blocks; ++b) new (lock_array + b) std::mutex;
    auto* entries = reinterpret_cast<PageEntry*>(base + header + locks);
    // Zero-filled memory is a table of NONE pages.
    static_assert(static_cast<int>(PageState::none) == 0);
    return new (base) ManagedRange(start, pages, owned, bytes, lock_array, entries);
}

ManagedRange::ManagedRange(std::uintptr_t start, std::size_t pages, bool owned, std::size_t table_bytes,
                           std::mutex* locks, PageEntry* entries) noexcept
    : start_(start), pages_(pages), owned_(owned), table_bytes_(table_bytes), locks_(locks), entries_(entries) {}

std::size_t ManagedRange::block_end(std::size_t page) const noexcept {
    return std::min(pages_, (page / kBlockPages + 1) * kBlockPages);
}

void ManagedRange::put() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    const std::size_t blocks = (pages_ + kBlockPages - 1) / kBlockPages;
    for (std::size_t b = 0; b < blocks; ++b) locks_[b].~mutex();
    const std::size_t bytes = table_bytes_;
    this->~ManagedRange();
    ::munmap(this, bytes);
}

std::size_t ManagedRange::fault_window(std::size_t page, std::size_t max_pages, std::size_t min_pages) noexcept {
    // A heuristic shared by the fault threads: relaxed, a lost update only
    // costs one smaller window.
    constexpr auto relaxed = std::memory_order_relaxed;
    min_pages = std::min(min_pages, max_pages);
    Stream* walk = nullptr;
    std::size_t window = min_pages;
    for (Stream& s : streams_) {
        if (s.next_up.load(relaxed) == page || s.next_down.load(relaxed) == page) {
            walk = &s;
            window = std::max(min_pages, std::min(max_pages, s.window.load(relaxed) * 2));
            break;
        }
    }
    if (!walk) walk = &streams_[oldest_stream_.fetch_add(1, relaxed) % kStreams];
    // Windows are aligned: the walk goes on just above or just below this one.
    const std::size_t first = page / window * window;
    walk->window.store(window, relaxed);
    walk->next_up.store(first + window, relaxed);
    walk->next_down.store(first ? first - 1 : ~std::size_t{0}, relaxed);
    return window;
}

}  // namespace uhmm::space
