// uhmm::allocator<T> — a standard allocator over a uhmm::Heap: containers
// whose elements live in managed memory, free to move to the device and back.
//
//   uhmm::allocator<int> a(runtime);             // runtime.heap()
//   std::vector<int, uhmm::allocator<int>> v(a);
//
// Stateful: it holds the heap it draws from. Memory belongs to its runtime,
// so the allocator travels with the data: copy and move assignment and swap
// take the other container's allocator (propagate_* are true), which makes a
// move assignment O(1) and never copies elements across runtimes. Two
// allocators are equal when they draw from the same heap, whatever their
// value types. There is no default constructor: which runtime memory belongs
// to is the program's decision, never a hidden global.
//
// allocate(n) throws std::bad_array_new_length when n * sizeof(T) overflows
// and std::bad_alloc when the heap refuses (Heap::allocate's errors); every
// alignment alignof(T) asks for is honoured, over-aligned types included.
#pragma once

#include <cstddef>
#include <limits>
#include <new>
#include <type_traits>

#include <uhmm/heap.hpp>
#include <uhmm/runtime.hpp>

namespace uhmm {

template <class T>
class allocator {
public:
    using value_type = T;
    using size_type = std::size_t;
    using difference_type = std::ptrdiff_t;
    using propagate_on_container_copy_assignment = std::true_type;
    using propagate_on_container_move_assignment = std::true_type;
    using propagate_on_container_swap = std::true_type;
    using is_always_equal = std::false_type;

    explicit allocator(Runtime& rt) : heap_(&rt.heap()) {}
    explicit allocator(Heap& heap) noexcept : heap_(&heap) {}
    template <class U>
    allocator(const allocator<U>& other) noexcept : heap_(&other.heap()) {}   // NOLINT: rebinding is implicit

    [[nodiscard]] T* allocate(std::size_t n) {
        if (n > max_size()) throw std::bad_array_new_length();
        auto p = heap_->allocate(n * sizeof(T), alignof(T));
        if (!p) throw std::bad_alloc();
        return static_cast<T*>(*p);
    }
    void deallocate(T* p, std::size_t n) noexcept { heap_->deallocate(p, n * sizeof(T), alignof(T)); }

    std::size_t max_size() const noexcept { return std::numeric_limits<std::size_t>::max() / sizeof(T); }
    Heap& heap() const noexcept { return *heap_; }
    Runtime& runtime() const noexcept { return heap_->runtime(); }

    template <class U>
    bool operator==(const allocator<U>& other) const noexcept {
        return heap_ == &other.heap();
    }

private:
    Heap* heap_;
};

}  // namespace uhmm
