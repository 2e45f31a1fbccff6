// The preload library's state, shared by its hooks.
//
// Hooks can run before the library's constructor (the dynamic loader and
// other libraries' constructors call malloc), in fork()ed children, and on
// the runtime's own threads. Everything here is constant-initialised, and a
// hook touches the runtime or the block table only in state `active` (or,
// for the table, `child`), on a thread that is not the runtime's own.
#pragma once

#include <atomic>
#include <cstddef>

#include <uhmm/runtime.hpp>

#include "base/internal.hpp"
#include "preload/blocks.hpp"

namespace uhmm::preload {

enum class State : int {
    starting = 0,   // before the constructor: everything goes to the real functions
    active,         // the runtime runs: hooks manage memory
    off,            // stepped aside (bad UHMM_CONF, no userfaultfd, setuid): real functions only
    child,          // a fork()ed child: the runtime is inert; blocks are plain memory, freed with munmap
};

struct Globals {
    std::atomic<State> state{State::starting};
    Runtime* rt = nullptr;          // set before state becomes active, never destroyed
    Blocks* blocks = nullptr;       // likewise (placement-new in the constructor)
    std::size_t min_range = 1u << 20;
};
extern Globals g;

inline State state() noexcept { return g.state.load(std::memory_order_acquire); }

// A hook should manage this call: the runtime runs and the caller is not it.
inline bool managing() noexcept { return state() == State::active && !base::internal(); }

// The block table may hold the pointer: managed heap blocks exist in these states.
inline bool blocks_live() noexcept {
    const State s = state();
    return s == State::active || s == State::child;
}

// Run a call into the runtime from a hook: marked internal (its own
// allocations and mappings go to the real functions), and no exception
// crosses the C ABI (bad_alloc deep in the runtime gives `fallback`).
template <class F, class T>
auto guarded(F&& f, T fallback) noexcept -> decltype(f()) {
    base::InternalScope internal;
    try {
        return f();
    } catch (...) {
        return fallback;
    }
}

}  // namespace uhmm::preload
