// uhmm::Heap — objects of any size packed into managed memory of one Runtime:
// what uhmm::allocator<T> (allocator.hpp) and uhmm::memory_resource
// (memory_resource.hpp) draw from. Runtime::heap() gives the runtime's own.
//
// Large objects (Runtime::config().min_range bytes or more, kept within
// [64 KiB, 8 MiB]) get a managed range of their own. Smaller ones are packed
// into shared 32 MiB chunks, so a million small objects cost a handful of
// mappings, not a million (the kernel allows 65,530 per process). The heap
// keeps all its bookkeeping in ordinary memory and never reads or writes the
// objects' memory itself: allocating or freeing never brings a device page
// home. Pages of emptied spans are kept for reuse, up to 8 MiB, then go back
// with MADV_DONTNEED (trim() gives them back at once). Thread-safe, with
// a small cache of free slots per thread. lib/alloc/ says how the packing
// works (heap_state.hpp first).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include <uhmm/result.hpp>

namespace uhmm {

class Runtime;

struct HeapStats {
    std::uint64_t chunks = 0, chunk_bytes = 0;        // shared ranges holding small and medium objects
    std::uint64_t large_ranges = 0, large_bytes = 0;  // objects with a range of their own (whole pages)
    std::uint64_t small_objects = 0;                  // objects in chunks live now (slots and runs)
    std::uint64_t small_bytes = 0;                    // their sizes, as asked
    std::uint64_t spans = 0, span_bytes = 0;          // chunk pages carved into size-class slots now
    std::uint64_t runs = 0, run_bytes = 0;            // chunk pages given whole to one medium object now
    std::uint64_t cached_spans = 0;                   // empty spans kept (at most one per size class and shard)
    std::uint64_t cached_objects = 0;                 // free slots held in threads' caches
    std::uint64_t dirty_bytes = 0;                    // pages of emptied spans and runs kept for reuse now
    std::uint64_t pages_returned = 0;                 // pages of emptied spans and runs given back (MADV_DONTNEED), ever
    std::uint64_t bad_frees = 0;                      // deallocate() calls ignored: not a live object of this heap
};

// Any thread may allocate, and free what another allocated.
class Heap {
public:
    explicit Heap(Runtime& rt);
    // Gives back every chunk and large range still held (the objects in them
    // are gone: destroy containers before their runtime).
    ~Heap();
    Heap(const Heap&) = delete;
    Heap& operator=(const Heap&) = delete;

    // `bytes` (0 is served as 1) aligned to `alignment` (a power of two).
    // Errors: EINVAL (alignment not a power of two), ENOMEM (bytes or the
    // alignment beyond what a range may hold, or no memory), the runtime's
    // errors for a new range (ECHILD in a fork()ed child).
    Result<void*> allocate(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t)) noexcept;
    // Give back what allocate(bytes, alignment) returned, with the same
    // bytes and alignment. nullptr is a no-op. A pointer that is not an
    // object's start in this heap is ignored (counted in bad_frees, logged
    // once), and so is one freed twice, except in one case: freed twice
    // through a thread's cache with other frees in between, it may be
    // handed out again before its span sees the second free (undefined, as
    // with malloc).
    void deallocate(void* p, std::size_t bytes, std::size_t alignment = alignof(std::max_align_t)) noexcept;

    // Whether `p` points into memory this heap manages (a chunk or a large range).
    bool owns(const void* p) const noexcept;
    // Give the calling thread's cached free slots back to their spans now
    // (small objects freed by a thread wait in its cache for reuse, and
    // keep their spans from being retired; a thread's cache empties by
    // itself when the thread ends).
    void flush_thread_cache() noexcept;
    // Give back now (MADV_DONTNEED) every page of emptied spans and runs the
    // heap keeps for reuse (it keeps up to 8 MiB, then gives them all back):
    // malloc_trim(0) for managed memory. Other threads' cached slots keep
    // their spans; flush_thread_cache() in each first to give back the most.
    void trim() noexcept;
    HeapStats stats() const;
    Runtime& runtime() const noexcept;

    struct State;

private:
    std::unique_ptr<State> state_;
};

}  // namespace uhmm
