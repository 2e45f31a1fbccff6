// uhmm::Heap (include/uhmm/heap.hpp): the public face. It picks an object's
// path by size and alignment (heap_state.hpp lists them), finds a pointer's
// chunk and span on the way back, and adds up the statistics.
//
// deallocate() trusts the pointer, not the size it is given: the chunk table
// and the span say what the pointer is, so a wrong size frees the right
// object, and a pointer that is not an object of this heap (from elsewhere,
// inside an object, freed twice where that can be seen: heap.hpp) is
// ignored, counted and logged once, with nothing changed.
#include <algorithm>
#include <thread>

#include <uhmm/runtime.hpp>

#include "alloc/heap_state.hpp"
#include "alloc/thread_cache.hpp"
#include "base/log.hpp"

namespace uhmm {

namespace {

constexpr std::size_t kMaxBytes = std::size_t{1} << 47;       // what Runtime::allocate takes
constexpr std::size_t kMaxAlignment = std::size_t{1} << 40;   // likewise

// Objects of min_range and up get a range of their own, but never below
// 64 KiB (a range per small object is what the heap exists to avoid) nor
// above a quarter chunk (a run must leave room for others).
std::size_t large_threshold(const Runtime& rt) {
    return std::clamp<std::size_t>(rt.config().min_range, 64 * 1024, alloc::kChunkBytes / 4);
}

// One shard per CPU, up to kMaxShards.
std::size_t shard_count() {
    return std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, alloc::kMaxShards);
}

// The calling thread's cache entry for this heap, claimed on first use
// (nullptr: none could be had; the locked path serves then).
alloc::CacheEntry* entry_for(Heap::State& state) noexcept {
    if (alloc::CacheEntry* e = alloc::find_entry(&state)) return e;
    return alloc::claim_entry(state);
}

}  // namespace

Heap::State::State(Runtime& runtime)
    : rt(runtime),
      large_min(large_threshold(runtime)),
      shards(shard_count()),
      lists(new alloc::SizeClass[shards * alloc::kClasses]) {}

Heap::State::~State() {
    alloc::forget_heap(*this);   // threads' entries for this heap: their slots go with the chunks
    for (std::size_t i = 0; i < shards * alloc::kClasses; ++i) lists[i].spans.clear();   // before their records go
    release_all_large();
    for (alloc::Chunk* c : chunks) (void)rt.release(reinterpret_cast<void*>(c->start()), alloc::kChunkBytes);
}

void Heap::State::bad_free(const void* p, const char* why) noexcept {
    if (bad_frees.fetch_add(1, std::memory_order_relaxed) == 0)
        log::get().warn("heap: deallocate({}) ignored: {} (logged once per heap)", p, why);
}

Heap::Heap(Runtime& rt) : state_(std::make_unique<State>(rt)) {}
Heap::~Heap() = default;

Result<void*> Heap::allocate(std::size_t bytes, std::size_t alignment) noexcept {
    if (alignment == 0 || (alignment & (alignment - 1))) return errno_code(EINVAL);
    if (bytes == 0) bytes = 1;
    if (bytes > kMaxBytes || alignment > kMaxAlignment) return errno_code(ENOMEM);
    if (bytes >= state_->large_min || alignment > alloc::kChunkBytes) return state_->alloc_large(bytes, alignment);
    if (const std::size_t c = alloc::class_for(bytes, alignment); c != alloc::kNoClass) {
        if (c < alloc::kCachedClasses)
            if (alloc::CacheEntry* e = entry_for(*state_)) return state_->cached_alloc(*e, c, bytes);
        return state_->alloc_slot(state_->list_for(c), bytes);
    }
    return state_->alloc_run(bytes, alignment);
}

void Heap::deallocate(void* p, std::size_t bytes, std::size_t) noexcept {
    if (!p) return;
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    if (alloc::Chunk* c = state_->table.find(a)) {
        alloc::Span* s = c->owner((a & (alloc::kChunkBytes - 1)) / alloc::kPage);
        const std::size_t kind = s ? s->kind.load(std::memory_order_acquire) : alloc::kSpanFree;
        if (kind < alloc::kSlotKinds) {
            alloc::CacheEntry* e = kind % alloc::kClasses < alloc::kCachedClasses ? entry_for(*state_) : nullptr;
            if (e) state_->cached_free(*e, *s, kind, a, bytes ? bytes : 1);
            else state_->free_slot(*s, kind, a, bytes ? bytes : 1);
        }
        else if (kind == alloc::kSpanRun) state_->free_run(*s, a);
        else state_->bad_free(p, "no object there");
        return;
    }
    if (!state_->free_large(a)) state_->bad_free(p, "not from this heap");
}

bool Heap::owns(const void* p) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    return state_->table.find(a) || state_->owns_large(a);
}

HeapStats Heap::stats() const {
    HeapStats s;
    // Objects are counted where they were allocated and freed: the lists,
    // the threads' entries, and entries given back; the sums are exact.
    const alloc::CacheTotals cached = alloc::cache_totals(*state_);
    std::int64_t objects = cached.objects + state_->folded_objects.load(std::memory_order_relaxed);
    std::int64_t bytes = cached.bytes + state_->folded_bytes.load(std::memory_order_relaxed);
    s.cached_objects = cached.cached;
    for (std::size_t i = 0; i < state_->shards * alloc::kClasses; ++i) {
        auto& sc = state_->lists[i];
        std::lock_guard lock(sc.lock);
        objects += sc.objects;
        bytes += sc.bytes;
        s.cached_spans += sc.has_empty;
    }
    s.small_objects = static_cast<std::uint64_t>(std::max<std::int64_t>(0, objects));
    s.small_bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(0, bytes));
    {
        std::lock_guard lock(state_->page_lock);
        s.chunks = state_->chunks.size();
        s.chunk_bytes = s.chunks * alloc::kChunkBytes;
        s.spans = state_->spans;
        s.span_bytes = state_->span_pages * alloc::kPage;
        s.small_objects += state_->runs;
        s.small_bytes += state_->run_bytes;
        s.runs = state_->runs;
        s.dirty_bytes = state_->dirty_pages * alloc::kPage;
        s.run_bytes = state_->run_pages * alloc::kPage;
    }
    {
        std::lock_guard lock(state_->large_lock);
        s.large_ranges = state_->large.size();
        s.large_bytes = state_->large_bytes;
    }
    s.pages_returned = state_->pages_returned.load(std::memory_order_relaxed);
    s.bad_frees = state_->bad_frees.load(std::memory_order_relaxed);
    return s;
}

void Heap::flush_thread_cache() noexcept {
    if (alloc::CacheEntry* e = alloc::find_entry(state_.get())) state_->flush_entry(*e);
}

void Heap::trim() noexcept { state_->purge(); }

Runtime& Heap::runtime() const noexcept { return state_->rt; }

}  // namespace uhmm
