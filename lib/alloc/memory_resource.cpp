// uhmm::memory_resource (include/uhmm/memory_resource.hpp): the heap behind
// std::pmr's interface. Out of line so that its vtable and type information
// live once, in the library, and do_is_equal's cast means the same
// everywhere.
#include <uhmm/memory_resource.hpp>
#include <uhmm/runtime.hpp>

#include <new>

namespace uhmm {

memory_resource::memory_resource(Runtime& rt) : heap_(&rt.heap()) {}

void* memory_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
    auto p = heap_->allocate(bytes, alignment);
    if (!p) throw std::bad_alloc();
    return *p;
}

void memory_resource::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
    heap_->deallocate(p, bytes, alignment);
}

bool memory_resource::do_is_equal(const std::pmr::memory_resource& other) const noexcept {
    const auto* o = dynamic_cast<const memory_resource*>(&other);
    return o && o->heap_ == heap_;
}

}  // namespace uhmm
