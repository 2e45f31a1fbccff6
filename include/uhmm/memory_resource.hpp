// uhmm::memory_resource — a std::pmr::memory_resource over a uhmm::Heap, for
// pmr containers and as the upstream of std::pmr's pool resources:
//
//   uhmm::memory_resource managed(runtime);                 // runtime.heap()
//   std::pmr::unsynchronized_pool_resource pool(&managed);
//   std::pmr::vector<std::pmr::string> v(&pool);
//
// allocate() throws std::bad_alloc when the heap refuses (Heap::allocate's
// errors, a bad alignment included). Two resources are equal when both are
// uhmm::memory_resource over the same heap. Thread-safe, as the heap is.
#pragma once

#include <cstddef>
#include <memory_resource>

#include <uhmm/heap.hpp>

namespace uhmm {

class Runtime;

class memory_resource final : public std::pmr::memory_resource {
public:
    explicit memory_resource(Runtime& rt);   // rt.heap()
    explicit memory_resource(Heap& heap) noexcept : heap_(&heap) {}

    Heap& heap() const noexcept { return *heap_; }
    Runtime& runtime() const noexcept { return heap_->runtime(); }

private:
    void* do_allocate(std::size_t bytes, std::size_t alignment) override;
    void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
    bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override;

    Heap* heap_;
};

}  // namespace uhmm
