// Runtime::prefetch, prefetch_async, prefetch_fence (cudaMemPrefetchAsync;
// see runtime.hpp and include/uhmm/prefetch.hpp).
//
// To the device, read-mostly pages get replicas and stay on the host (as
// CUDA's read duplication); the rest migrate for the given device. To the
// host, device pages come home and never-touched pages are filled, so the
// CPU's next pass over the range takes no fault at all.
#include <sys/mman.h>

#include <algorithm>
#include <vector>

#include "runtime/page_walk.hpp"
#include "runtime/prefetch_queue.hpp"
#include "runtime/runtime_impl.hpp"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

namespace uhmm {

using space::kPage;

namespace {

struct Span {
    std::uintptr_t start, end;
};

// The pages holding [addr, addr+len): EINVAL for zero or overflowing
// lengths, EFAULT when some page is not managed.
Result<Span> pages_of(const space::AddressSpace& space, const void* addr, std::size_t len) {
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    if (len == 0 || a + len < a || a + len > (std::uintptr_t{1} << 57)) return errno_code(EINVAL);
    const Span s{a & ~(std::uintptr_t{kPage} - 1), (a + len + kPage - 1) & ~(std::uintptr_t{kPage} - 1)};
    if (!all_managed(space, reinterpret_cast<void*>(s.start), s.end - s.start)) return errno_code(EFAULT);
    return s;
}

// Calls fn(start, end, bit_set) for the runs of pages of `s` that agree on
// whether `bit` is in their advice; false when the range stopped being managed.
template <class Fn>
bool for_each_advice_run(const Runtime& rt, Span s, std::uint8_t bit, Fn&& fn) {
    std::vector<std::uint8_t> bits((s.end - s.start) / kPage);
    if (rt.advice(reinterpret_cast<void*>(s.start), s.end - s.start, bits)) return false;
    for (std::size_t i = 0; i < bits.size();) {
        const bool set = bits[i] & bit;
        std::size_t j = i + 1;
        while (j < bits.size() && static_cast<bool>(bits[j] & bit) == set) ++j;
        fn(s.start + i * kPage, s.start + j * kPage, set);
        i = j;
    }
    return true;
}

// Fill the never-touched pages of `s` (a read fault each run: the fault
// path fills them, windows and all). Returns the pages filled.
std::size_t fill_untouched(const Runtime& rt, Span s) {
    std::vector<PageState> states((s.end - s.start) / kPage);
    if (rt.residency(reinterpret_cast<void*>(s.start), s.end - s.start, states)) return 0;
    std::size_t filled = 0;
    for (std::size_t i = 0; i < states.size();) {
        if (states[i] != PageState::none) {
            ++i;
            continue;
        }
        std::size_t j = i + 1;
        while (j < states.size() && states[j] == PageState::none) ++j;
        if (::madvise(reinterpret_cast<void*>(s.start + i * kPage), (j - i) * kPage, MADV_POPULATE_READ) == 0)
            filled += j - i;
        i = j;
    }
    return filled;
}

Result<MigrateResult> run_prefetch(Runtime& rt, Runtime::Impl& impl, Span s, Target to, const void* device) {
    const auto t0 = std::chrono::steady_clock::now();
    MigrateResult total;
    std::error_code failed;
    // `device` owns what goes to the device; home, nobody does (an owner
    // there would let that device skip the invalidation and keep entries
    // for pages that left).
    auto move = [&](std::uintptr_t a, std::uintptr_t b) {
        auto r = rt.migrate(reinterpret_cast<void*>(a), b - a, to, to == Target::device ? device : nullptr);
        if (r) total.add(*r);
        else if (!failed) failed = r.error();
        if (!r || !r->migrated || to != Target::device || !device) return;
        // The device skipped the migration's invalidation as its own, but it
        // did not ask for it: entries it had for these pages point at the
        // host. Have it map the pages where they are now (Notifier::populate);
        // one that cannot drops its entries instead.
        std::error_code mapped = errno_code(ENOTSUP);
        (void)impl.notifiers.with_inserted(static_cast<const mirror::Notifier*>(device),
                                           [&](mirror::Notifier& n) { mapped = n.populate(a, b); });
        if (mapped) (void)impl.notifiers.invalidate({a, b, mirror::Event::migrate, true, nullptr});
    };
    if (to == Target::device) {
        const bool managed = for_each_advice_run(rt, s, advice_bits::read_mostly, [&](auto a, auto b, bool rm) {
            if (rm) impl.replicate(a, b, total);
            else move(a, b);
        });
        if (!managed) failed = errno_code(EFAULT);
    } else {
        move(s.start, s.end);
        const std::size_t filled = fill_untouched(rt, s);
        total.migrated += filled;
        total.already_there -= std::min(total.already_there, filled);
        // Filled pages are new to accessed-by devices too (migrate() mapped
        // only what it moved, before they were filled).
        if (filled) impl.repopulate(s.start, s.end);
    }
    impl.prefetches.fetch_add(1, std::memory_order_relaxed);
    if (failed && !total.requested) return failed;   // the memory went away before anything was asked
    total.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return total;
}

}  // namespace

Result<MigrateResult> Runtime::prefetch(const void* addr, std::size_t len, Target to, const void* device) {
    if (impl_->forked_child.load(std::memory_order_acquire)) return errno_code(ECHILD);
    if (to != Target::host && to != Target::device) return errno_code(EINVAL);
    auto s = pages_of(impl_->space, addr, len);
    if (!s) return s.error();
    return run_prefetch(*this, *impl_, *s, to, device);
}

Result<PrefetchFence> Runtime::prefetch_async(const void* addr, std::size_t len, Target to, const void* device) {
    if (impl_->forked_child.load(std::memory_order_acquire)) return errno_code(ECHILD);
    if (to != Target::host && to != Target::device) return errno_code(EINVAL);
    auto s = pages_of(impl_->space, addr, len);
    if (!s) return s.error();
    std::call_once(impl_->prefetch_once, [this] { impl_->prefetch_queue = std::make_unique<PrefetchQueue>(); });
    try {
        return impl_->prefetch_queue->push(
            [this, span = *s, to, device] { return run_prefetch(*this, *impl_, span, to, device); });
    } catch (const std::system_error& e) {
        return e.code();   // the thread could not start
    } catch (const std::bad_alloc&) {
        return errno_code(ENOMEM);   // no room for the fence or the queue entry
    }
}

PrefetchFence Runtime::prefetch_fence() {
    std::call_once(impl_->prefetch_once, [this] { impl_->prefetch_queue = std::make_unique<PrefetchQueue>(); });
    try {
        return impl_->prefetch_queue->fence();
    } catch (const std::system_error&) {
        return PrefetchFence();   // nothing could have been queued without the thread
    }
}

}  // namespace uhmm
