// Pages of chunks: spans and runs carved out and given back, chunks taken
// from the runtime and returned to it. Everything here runs under the page
// lock except madvise and the runtime's release, which may wait for the
// runtime's threads.
//
// An emptied span's pages go back to its chunk dirty: still holding their
// old contents, wherever they are (host or device), for the next span or run
// carved there. Only when more than kDirtyBudget of them wait (or on
// Heap::trim()) are they purged: taken out of the map while MADV_DONTNEED
// runs, so nobody is carved onto pages being dropped, then given back clean.
// The runtime reads the REMOVE event and drops the pages, host or device.
// This is jemalloc's dirty-page reuse, without its decay timer: an madvise
// per emptied span made a free-heavy program wait on the runtime's monitor
// thread (its REMOVE event) for every span, several times malloc's cost in
// bench/alloc; one purge of a few MiB in long runs costs little per object.
// At most one wholly empty chunk is kept, so a program whose use hovers at a
// chunk's edge does not map and unmap a chunk per object.
#include <sys/mman.h>

#include <algorithm>
#include <new>

#include <uhmm/runtime.hpp>

#include "alloc/heap_state.hpp"
#include "base/internal.hpp"
#include "base/log.hpp"

namespace uhmm {

namespace {

// Dirty pages the heap keeps for reuse before it purges them all: 8 MiB.
constexpr std::size_t kDirtyBudgetPages = (std::size_t{8} << 20) / alloc::kPage;
// Runs purged per pass, each pass under the page lock twice.
constexpr std::size_t kPurgeBatch = 64;

}  // namespace

using alloc::Chunk;
using alloc::kChunkBytes;
using alloc::kPage;
using alloc::PageMap;
using alloc::Span;

Result<Chunk*> Heap::State::add_chunk() noexcept {
    try {
        // Records come from the real malloc, never from managed memory, even
        // under the preload library.
        base::InternalScope internal;
        if (spare_chunks.empty()) {
            chunk_records.push_back(std::make_unique<Chunk>());
            spare_chunks.reserve(chunk_records.size());
            chunks.reserve(chunk_records.size());
            spare_chunks.push_back(chunk_records.back().get());
        }
    } catch (const std::bad_alloc&) {
        return errno_code(ENOMEM);
    }
    auto mem = rt.allocate(kChunkBytes, kChunkBytes);
    if (!mem) return mem.error();
    Chunk* c = spare_chunks.back();
    c->base.store(reinterpret_cast<std::uintptr_t>(*mem), std::memory_order_release);
    if (auto ec = table.insert(*c)) {
        c->base.store(0, std::memory_order_release);
        (void)rt.release(*mem, kChunkBytes);
        return ec;
    }
    spare_chunks.pop_back();
    const auto by_start = [](const Chunk* x, const Chunk* y) { return x->start() < y->start(); };
    chunks.insert(std::upper_bound(chunks.begin(), chunks.end(), c, by_start), c);   // capacity reserved
    ++empty_chunks;
    return c;
}

Result<Span*> Heap::State::span_record() noexcept {
    if (spare_spans.empty()) {
        try {
            base::InternalScope internal;
            span_records.emplace_back();
            spare_spans.reserve(span_records.size());
        } catch (const std::bad_alloc&) {
            return errno_code(ENOMEM);
        }
        spare_spans.push_back(&span_records.back());
    }
    return spare_spans.back();
}

Result<Span*> Heap::State::carve(std::size_t pages, std::size_t align_pages, std::uint16_t kind,
                                 std::size_t bytes) noexcept {
    std::lock_guard lock(page_lock);
    Chunk* c = nullptr;
    std::size_t first = PageMap::npos;
    for (Chunk* candidate : chunks) {   // lowest address first: the used pages stay packed
        first = candidate->map.find(pages, align_pages);
        if (first != PageMap::npos) {
            c = candidate;
            break;
        }
    }
    if (!c) {
        auto added = add_chunk();
        if (!added) return added.error();
        c = *added;
        first = c->map.find(pages, align_pages);   // an empty chunk fits anything below the large threshold
        if (first == PageMap::npos) return errno_code(ENOMEM);
    }
    auto record = span_record();
    if (!record) return record.error();
    Span* s = *record;
    spare_spans.pop_back();
    if (c->map.empty()) --empty_chunks;
    dirty_pages -= c->map.take(first, pages);
    s->chunk = c;
    s->first_page = static_cast<std::uint32_t>(first);
    s->pages = static_cast<std::uint32_t>(pages);
    s->start = c->start() + first * kPage;
    if (kind == alloc::kSpanRun) {
        s->size = static_cast<std::uint32_t>(bytes);
        s->slots = s->used = 1;
        ++runs;
        run_pages += pages;
        run_bytes += bytes;
    } else {
        ++spans;
        span_pages += pages;
    }
    // Kind first, then the owners: whoever finds the record through a page
    // owner sees what it is.
    s->kind.store(kind, std::memory_order_release);
    c->set_owner(*s, s);
    return s;
}

std::uintptr_t Heap::State::drop_if_spare(Chunk& c) noexcept {
    if (empty_chunks == 0) {
        ++empty_chunks;
        return 0;
    }
    const std::uintptr_t start = c.start();
    chunks.erase(std::find(chunks.begin(), chunks.end(), &c));
    table.erase(c);
    c.base.store(0, std::memory_order_release);
    dirty_pages -= c.map.dirty_pages();   // unmapped with the chunk: nothing left to purge there
    c.map = alloc::PageMap{};
    spare_chunks.push_back(&c);   // capacity reserved
    return start;
}

void Heap::State::retire(Span& s, bool run) noexcept {
    std::uintptr_t release = 0;
    bool over_budget = false;
    {
        std::lock_guard lock(page_lock);
        Chunk& c = *s.chunk;
        c.set_owner(s, nullptr);
        c.map.give(s.first_page, s.pages, true);
        dirty_pages += s.pages;
        if (!run) {
            --spans;
            span_pages -= s.pages;
        }
        s.kind.store(alloc::kSpanFree, std::memory_order_release);
        spare_spans.push_back(&s);   // capacity reserved
        if (c.map.empty()) release = drop_if_spare(c);
        over_budget = dirty_pages > kDirtyBudgetPages;
    }
    release_chunk(release);
    if (over_budget) purge();
}

void Heap::State::release_chunk(std::uintptr_t start) noexcept {
    if (!start) return;
    if (auto ec = rt.release(reinterpret_cast<void*>(start), kChunkBytes))
        log::get().warn("heap: releasing an empty chunk at {:#x}: {}", start, ec.message());
}

void Heap::State::purge() noexcept {
    struct Taken {
        Chunk* chunk;
        alloc::PageMap::Run run;
    };
    for (bool more = true; more;) {
        Taken taken[kPurgeBatch];
        std::size_t n = 0;
        {
            // Taken runs are used pages: no carve lands there, and their
            // chunk cannot empty and go while they are out.
            std::lock_guard lock(page_lock);
            for (std::size_t i = 0; i < chunks.size() && n < kPurgeBatch; ++i) {
                Chunk* c = chunks[i];
                for (std::size_t from = 0; n < kPurgeBatch;) {
                    const bool was_empty = c->map.empty();
                    const auto run = c->map.take_dirty(from);
                    if (run.pages == 0) break;
                    if (was_empty) --empty_chunks;
                    dirty_pages -= run.pages;
                    taken[n++] = {c, run};
                    from = run.first + run.pages;
                }
            }
            more = n == kPurgeBatch;
        }
        for (std::size_t i = 0; i < n; ++i) {
            const std::uintptr_t at = taken[i].chunk->start() + taken[i].run.first * kPage;
            if (::madvise(reinterpret_cast<void*>(at), taken[i].run.pages * kPage, MADV_DONTNEED) == 0)
                pages_returned.fetch_add(taken[i].run.pages, std::memory_order_relaxed);
            else
                log::get().warn("heap: madvise(DONTNEED) of free pages at {:#x}: {}", at, last_errno().message());
        }
        std::uintptr_t release[kPurgeBatch];
        std::size_t releases = 0;
        {
            std::lock_guard lock(page_lock);
            for (std::size_t i = 0; i < n; ++i) {
                Chunk& c = *taken[i].chunk;
                c.map.give(taken[i].run.first, taken[i].run.pages);
                if (c.map.empty())
                    if (std::uintptr_t start = drop_if_spare(c)) release[releases++] = start;
            }
        }
        for (std::size_t i = 0; i < releases; ++i) release_chunk(release[i]);
    }
}

}  // namespace uhmm
