// range_map / range_unmap: fault a range and map every valid page in a
// device in one call (the proposed hmm_range_dma_map), under the device's
// lock and the notifier protocol. See include/uhmm/mirror.hpp.
#include <uhmm/mirror.hpp>
#include <uhmm/runtime.hpp>

#include <chrono>

namespace uhmm::mirror {

namespace {

constexpr std::size_t kPage = 4096;
// As the kernel's HMM_RANGE_DEFAULT_TIMEOUT: racing invalidations are
// retried for this long, then EBUSY.
constexpr auto kTimeout = std::chrono::milliseconds(1000);

// Undo the first `count` pages' mappings (device lock held).
void unmap_first(Runtime& rt, const Range& range, DeviceMapper& mapper, std::size_t count) noexcept {
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint64_t e = range.pfns[i];
        if (!(e & pfn::valid)) continue;
        mapper.unmap_page(i, e);
        if (e & pfn::device) (void)rt.device_page_put(e & pfn::location_mask);
    }
}

}  // namespace

std::error_code range_map(Runtime& rt, Range& range, DeviceMapper& mapper, std::mutex& device_lock) {
    if (!range.notifier) return std::make_error_code(std::errc::invalid_argument);
    const std::size_t n = range.end > range.start ? (range.end - range.start) / kPage : 0;
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (std::chrono::steady_clock::now() < deadline) {
        range.notifier_seq = range.notifier->read_begin();
        if (auto ec = range_fault(rt, range)) {
            if (ec == std::errc::device_or_resource_busy) continue;
            return ec;
        }
        std::lock_guard lock(device_lock);
        if (range.notifier->read_retry(range.notifier_seq)) continue;
        bool raced = false;
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint64_t e = range.pfns[i];
            if (!(e & pfn::valid)) continue;
            // A device page stays the device's while mapped: a reference,
            // taken only if the address still has that very page (a page a
            // CPU fault brought home may already serve another address; its
            // invalidation is on its way): else undo and start over.
            if ((e & pfn::device) &&
                rt.device_page_hold(reinterpret_cast<void*>(range.start + i * kPage), e & pfn::location_mask)) {
                unmap_first(rt, range, mapper, i);
                raced = true;
                break;
            }
            if (auto ec = mapper.map_page(i, e)) {
                if (e & pfn::device) (void)rt.device_page_put(e & pfn::location_mask);
                unmap_first(rt, range, mapper, i);
                return ec;
            }
        }
        if (!raced) return {};
    }
    return std::make_error_code(std::errc::device_or_resource_busy);
}

void range_unmap(Runtime& rt, const Range& range, DeviceMapper& mapper, std::mutex& device_lock) {
    // Host pages a device wrote were written through the kernel
    // (process_vm_writev or the like), which dirtied them: nothing more to
    // mark. Device pages: drop the references range_map took.
    std::lock_guard lock(device_lock);
    unmap_first(rt, range, mapper, range.end > range.start ? (range.end - range.start) / kPage : 0);
}

}  // namespace uhmm::mirror
