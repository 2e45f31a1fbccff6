// uhmm::migrate::CopyEngine — moves bytes between host memory and a device
// arena, and says when it is done through a fence.
//
// The migration layer hands an engine a batch of copies (host address, arena
// byte offset, length) and one direction, and gets back a Fence: the batch's
// completion object, as a DMA fence is for a device copy engine. A fence is
// waited on, polled, or given a callback, and after it signals it holds one
// result per op (bytes moved, error) and a summary error.
//
// Engines: io_uring (the arena file is a registered fixed file; writes from
// present host pages into the file, reads from the file into a caller buffer;
// staging buffers are registered fixed buffers; application memory is never
// registered), memcpy (synchronous fallback and benchmark reference), cuda
// (cudaMemcpyAsync on a stream; compiled only with CUDA). make_copy_engine()
// probes io_uring once and falls back to memcpy with one warning.
//
// Error protocol (per op, OpResult::error; errno values, generic category,
// except cuda errors, which carry their own category and text):
//   ERANGE   the op reaches past the arena size the engine knows (nothing done)
//   EINVAL   a zero-length op or a null host address (nothing done)
//   EFAULT   the host range is not mapped or not accessible (io_uring engine;
//            the memcpy engine would crash instead)
//   ENXIO    the arena file ended before the op did (file shorter than the view)
//   EBADF... anything else the kernel answered for that op, unchanged
// -EAGAIN/-EINTR from the kernel and short transfers are retried inside the
// engine and never reach the caller.
//
// Threading: submit() may be called from any number of threads at once; a
// fence may be waited on or polled from any thread. Callbacks run once, on the
// engine's thread that completed the batch (io_uring: its completion thread
// or CPU worker; cuda: CUDA's callback thread, where submit() is not allowed)
// or, when the fence has already signalled, on the thread calling
// on_complete(). A callback must not block and must not wait on a fence of the
// same engine. Destroying an engine waits for every batch in flight; staging
// buffers must be returned before it.
//
// Adjacent ops of a batch that continue each other on both sides (contiguous
// host pages to contiguous device pages) are coalesced by the io_uring engine
// into one request; results and errors stay per op.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include <uhmm/arena_view.hpp>
#include <uhmm/result.hpp>

namespace uhmm::migrate {

namespace detail {
struct FenceState;
class StagingPool;
}  // namespace detail

enum class Direction : std::uint8_t {
    to_device,   // host → arena: host is the source
    to_host,     // arena → host: host is the destination
};

// One copy. Host memory must stay mapped (and, to_device, unchanged) until the
// fence signals.
struct CopyOp {
    void* host = nullptr;
    std::uint64_t arena_offset = 0;   // byte offset in the arena (page N at N * kPageSize)
    std::uint32_t len = 0;
};

// What happened to one op, valid once the fence has signalled.
struct OpResult {
    std::uint32_t bytes = 0;          // bytes moved (== len on success)
    std::error_code error;            // empty on success
};

// The completion of one submitted batch (shared state; copies are cheap and
// refer to the same batch). A default-constructed Fence is already signalled
// and empty.
class Fence {
public:
    using Callback = std::function<void(const Fence&)>;

    Fence() = default;
    explicit Fence(std::shared_ptr<detail::FenceState> state) noexcept;

    bool poll() const noexcept;                              // signalled?
    std::error_code wait() const;                            // block until signalled; summary error
    bool wait_for(std::chrono::nanoseconds timeout) const;   // false on timeout
    void on_complete(Callback cb) const;                     // see the threading note above

    // Valid once signalled:
    std::span<const OpResult> results() const noexcept;      // one per op, in submission order
    std::error_code error() const noexcept;                  // first failed op's error; empty when all ok
    std::size_t failed() const noexcept;                     // how many ops failed
    std::uint64_t bytes() const noexcept;                    // bytes moved in all
    std::size_t size() const noexcept;                       // ops in the batch

private:
    std::shared_ptr<detail::FenceState> s_;
};

// A runtime-owned buffer from the engine's staging pool (registered with
// io_uring as a fixed buffer, pinned with cudaHostAlloc for cuda): the
// destination of to_host copies the runtime keeps (e.g. before UFFDIO_COPY),
// and the fastest source for to_device ones. Move-only; returned on
// destruction; must not outlive its engine.
class StagingBuffer {
public:
    StagingBuffer() = default;
    StagingBuffer(detail::StagingPool* pool, std::uint32_t slot, std::span<std::byte> bytes) noexcept;
    StagingBuffer(StagingBuffer&& o) noexcept;
    StagingBuffer& operator=(StagingBuffer&& o) noexcept;
    StagingBuffer(const StagingBuffer&) = delete;
    StagingBuffer& operator=(const StagingBuffer&) = delete;
    ~StagingBuffer();

    std::span<std::byte> bytes() const noexcept { return bytes_; }
    std::byte* data() const noexcept { return bytes_.data(); }
    std::size_t size() const noexcept { return bytes_.size(); }

private:
    void release() noexcept;
    detail::StagingPool* pool_ = nullptr;
    std::uint32_t slot_ = 0;
    std::span<std::byte> bytes_;
};

enum class EngineKind : std::uint8_t { automatic, uring, memcpy, cuda };

std::string_view to_string(EngineKind kind) noexcept;

struct EngineOptions {
    unsigned queue_depth = 128;                   // io_uring ops in flight (SQ entries)
    bool offload = true;                          // io_uring: IOSQE_ASYNC, copies run on io-wq
                                                  // workers, not in the submitting thread
    bool cpu_worker = false;                      // io_uring engine: copy through the arena mapping
                                                  // on the engine's worker thread (process_vm_*v, so
                                                  // a bad host address is still EFAULT), both
                                                  // directions, instead of READ/WRITE; always so for
                                                  // writes into hugetlb, which has no write path
    std::size_t staging_slots = 4;                // staging buffers (0: none)
    std::size_t staging_slot_bytes = devmem::kChunkSize;
};

class CopyEngine {
public:
    virtual ~CopyEngine() = default;              // waits for every batch in flight

    virtual EngineKind kind() const noexcept = 0;
    virtual std::string_view name() const noexcept = 0;

    // Start a batch; never blocks on the copy itself (the memcpy engine copies
    // before returning, and returns a signalled fence).
    virtual Fence submit(Direction dir, std::span<const CopyOp> ops) = 0;

    // A free staging buffer, or EAGAIN (all in use: retry after one is
    // returned), or ENOSPC (the engine was made with no staging).
    virtual Result<StagingBuffer> acquire_staging() = 0;

    // The arena grew to `size` bytes (ops are checked against it).
    virtual void set_arena_size(std::size_t size) noexcept = 0;
};

// Whether io_uring can be used here (probed once per process).
struct UringSupport {
    bool available = false;
    std::error_code error;                        // why not
    std::string reason;                           // one line: why not, and what fixes it
};
const UringSupport& uring_support();

// automatic: cuda arenas → cuda; numa arenas → memcpy (CPU-coherent memory);
// file arenas → io_uring, or memcpy with one warning when io_uring is
// unusable. An explicit kind that cannot work here is an error: ENOSYS/EPERM
// (io_uring unusable), ENOTSUP (kind does not fit the arena, or built without
// CUDA), a cuda_category() error (no usable GPU; message() is CUDA's text).
Result<std::unique_ptr<CopyEngine>> make_copy_engine(EngineKind kind, const devmem::ArenaView& view,
                                                     const EngineOptions& options = {});

// The category of CUDA runtime errors (value = cudaError_t).
const std::error_category& cuda_category() noexcept;

}  // namespace uhmm::migrate
