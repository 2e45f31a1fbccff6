// Pages of chunks: spans and runs carved out and given back, chunks taken
// from the runtime and returned to it. Everything here runs under the page
// lock except madvise and the runtime's release, which may wait for the
// runtime's threads.
//
// A span's pages go back with MADV_DONTNEED before the chunk may hand them
// out again: the runtime reads the REMOVE event and drops the pages, host or
// device, so a retired span costs no memory and its next owner starts from
// zero-filled pages (the runtime fills them lazily, on first touch). At most
// one wholly empty chunk is kept, so a program whose use hovers at a chunk's
// edge does not map and unmap a chunk per object.
#include <sys/mman.h>

#include <algorithm>
#include <new>

#include <uhmm/runtime.hpp>

#include "alloc/heap_state.hpp"
#include "base/internal.hpp"
#include "base/log.hpp"

namespace uhmm {

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
    c->map.take(first, pages);
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
    spare_chunks.push_back(&c);   // capacity reserved
    return start;
}

void Heap::State::retire(Span& s, bool run) noexcept {
    if (::madvise(reinterpret_cast<void*>(s.start), s.bytes(), MADV_DONTNEED) == 0)
        pages_returned.fetch_add(s.pages, std::memory_order_relaxed);
    else
        log::get().warn("heap: madvise(DONTNEED) of a retired span at {:#x}: {}", s.start, last_errno().message());
    std::uintptr_t release = 0;
    {
        std::lock_guard lock(page_lock);
        Chunk& c = *s.chunk;
        c.set_owner(s, nullptr);
        c.map.give(s.first_page, s.pages);
        if (!run) {
            --spans;
            span_pages -= s.pages;
        }
        s.kind.store(alloc::kSpanFree, std::memory_order_release);
        spare_spans.push_back(&s);   // capacity reserved
        if (c.map.empty()) release = drop_if_spare(c);
    }
    if (!release) return;
    if (auto ec = rt.release(reinterpret_cast<void*>(release), kChunkBytes))
        log::get().warn("heap: releasing an empty chunk at {:#x}: {}", release, ec.message());
}

}  // namespace uhmm
