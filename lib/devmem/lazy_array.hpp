// LazyArray<T>: a fixed-capacity array whose memory is committed as it is used.
//
// The allocator's metadata (a 16-byte PageMeta per device page, a header per
// chunk) is sized for arena_size, which may be far more than the arena ever
// maps (16 TiB → 64 GiB of page metadata). Like the kernel's vmemmap, the
// array is one MAP_NORESERVE anonymous mapping: address space for the limit,
// RAM only for the pages of metadata that are touched. Elements are
// constructed in order, as chunks are mapped, and destroyed with the array.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <memory>
#include <new>
#include <utility>

#include <uhmm/result.hpp>

namespace uhmm::devmem {

template <class T>
class LazyArray {
public:
    LazyArray() = default;
    LazyArray(const LazyArray&) = delete;
    LazyArray& operator=(const LazyArray&) = delete;
    ~LazyArray() {
        for (std::size_t i = 0; i < constructed_; ++i) std::destroy_at(data_ + i);
        if (data_) ::munmap(data_, bytes_);
    }

    // Address space for `capacity` elements; none constructed yet.
    std::error_code reserve(std::size_t capacity) {
        bytes_ = capacity * sizeof(T);
        void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return last_errno();
        data_ = static_cast<T*>(p);
        capacity_ = capacity;
        return {};
    }

    // Construct elements [constructed, constructed + n). Not thread-safe: the
    // caller serialises growth and publishes the new size itself.
    void construct_next(std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) std::construct_at(data_ + constructed_ + i);
        constructed_ += n;
    }

    T& operator[](std::size_t i) noexcept { return data_[i]; }
    const T& operator[](std::size_t i) const noexcept { return data_[i]; }
    std::size_t index_of(const T& element) const noexcept {
        return static_cast<std::size_t>(&element - data_);
    }
    std::size_t capacity() const noexcept { return capacity_; }

private:
    T* data_ = nullptr;
    std::size_t bytes_ = 0;
    std::size_t capacity_ = 0;
    std::size_t constructed_ = 0;
};

}  // namespace uhmm::devmem
