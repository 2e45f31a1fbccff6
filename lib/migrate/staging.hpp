// Staging buffers: fixed-size slots carved from one runtime-owned region.
//
// The region is allocated by the engine that owns the pool (anonymous,
// populated memory registered with io_uring; cudaHostAlloc memory for cuda)
// because only the engine knows how to make it fast; the pool only hands out
// slots. Slots, not a general allocator: a migration moves at most a chunk at
// a time, and one slot index is exactly what io_uring's buf_index wants.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include <uhmm/copy_engine.hpp>

namespace uhmm::migrate::detail {

class StagingPool {
public:
    StagingPool() = default;
    // `region` holds `slots` slots of `slot_bytes` each; not owned.
    void reset(std::span<std::byte> region, std::size_t slot_bytes, std::size_t slots);

    Result<StagingBuffer> acquire();
    void release(std::uint32_t slot) noexcept;

    // The slot wholly containing [p, p + len), if any (io_uring fixed buffers).
    std::optional<std::uint32_t> slot_of(const void* p, std::size_t len) const noexcept;

    std::size_t slots() const noexcept { return slots_; }
    std::size_t slot_bytes() const noexcept { return slot_bytes_; }
    std::span<std::byte> region() const noexcept { return region_; }
    std::size_t in_use() const;

private:
    std::span<std::byte> region_;
    std::size_t slot_bytes_ = 0;
    std::size_t slots_ = 0;
    mutable std::mutex mu_;
    std::vector<std::uint32_t> free_;
};

// An anonymous, populated mapping owned by the engine (the staging region of
// the io_uring and memcpy engines).
class AnonRegion {
public:
    AnonRegion() = default;
    static Result<AnonRegion> create(std::size_t bytes);
    AnonRegion(AnonRegion&& o) noexcept;
    AnonRegion& operator=(AnonRegion&& o) noexcept;
    AnonRegion(const AnonRegion&) = delete;
    AnonRegion& operator=(const AnonRegion&) = delete;
    ~AnonRegion();

    std::span<std::byte> bytes() const noexcept { return {p_, n_}; }

private:
    std::byte* p_ = nullptr;
    std::size_t n_ = 0;
};

}  // namespace uhmm::migrate::detail
