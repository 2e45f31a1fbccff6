// Whether io_uring works in this process: sysctl, seccomp, kernel version and
// the opcodes the engine needs.
#pragma once

#include <uhmm/copy_engine.hpp>

namespace uhmm::migrate::detail {

// Probe now, without caching (tests run it in a child under seccomp).
UringSupport probe_uring_uncached();

}  // namespace uhmm::migrate::detail
