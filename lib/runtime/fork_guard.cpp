// fork(): parent and child each keep the data they had at fork time.
//
// The runtime's userfaultfd is opened without UFFD_FEATURE_EVENT_FORK, so the
// kernel hands the child ordinary memory (its ranges unregistered, its
// write-protect bits cleared) and fork() never waits for a reader. Device
// pages live in the arena, which the child cannot see as its memory; so
// before fork() every device page is brought home, with migrations held off
// until fork() returns. The child's copy of the runtime is inert: it has no
// threads, and its userfaultfd is the parent's, so it closes it.
//
// Why not keep device pages across fork: the child would need a runtime of
// its own (threads, a userfaultfd of its own, copy-on-write of device pages),
// which costs every fork; bringing pages home costs only forks of processes
// that have pages on the device. Say so in the docs.
#include <pthread.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "base/log.hpp"
#include "runtime/runtime_impl.hpp"

namespace uhmm {

namespace {

std::mutex& registry_lock() {
    static std::mutex m;
    return m;
}
std::vector<Runtime::Impl*>& registry() {
    // Never destroyed: a fork during the process's exit handlers still
    // finds it.
    static auto* r = new std::vector<Runtime::Impl*>;
    return *r;
}

// pthread_atfork's handlers run before glibc takes malloc's locks (prepare)
// and after it drops them (parent, child): they may allocate.
void prepare() {
    registry_lock().lock();
    for (auto* rt : registry()) rt->prepare_fork();
}
void parent() {
    for (auto* rt : registry()) rt->after_fork_parent();
    registry_lock().unlock();
}
void child() {
    for (auto* rt : registry()) rt->after_fork_child();
    registry().clear();
    registry_lock().unlock();
}

}  // namespace

void fork_guard_add(Runtime::Impl* rt) {
    static std::once_flag once;
    std::call_once(once, [] { ::pthread_atfork(prepare, parent, child); });
    std::lock_guard lock(registry_lock());
    registry().push_back(rt);
}

void fork_guard_remove(Runtime::Impl* rt) {
    std::lock_guard lock(registry_lock());
    auto& r = registry();
    r.erase(std::remove(r.begin(), r.end(), rt), r.end());
}

void Runtime::Impl::prepare_fork() {
    migration_lock.lock();
    std::vector<space::RangeRef> ranges;
    space.snapshot(ranges);
    delivery->drain();
    for (auto& r : ranges) {
        (void)notifiers.invalidate({r->start(), r->end(), mirror::Event::fork, true, nullptr});
        (void)bring_all_home(*r);   // logged; fork goes on regardless
    }
}

void Runtime::Impl::after_fork_parent() noexcept { migration_lock.unlock(); }

void Runtime::Impl::after_fork_child() noexcept {
    forked_child.store(true, std::memory_order_release);
    // The inherited descriptors name the parent's userfaultfd, ring and
    // /proc/<pid>/pagemap: never used here. They are already closed: every
    // descriptor the runtime keeps is recorded in base/private_fds, whose
    // own fork handler (registered before this one) closes them all in the
    // child, so that its descriptor table is what it would be natively.
    migration_lock.unlock();
}

}  // namespace uhmm
