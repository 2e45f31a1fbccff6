// How many userfaultfd readers a runtime starts, and where they run.
#pragma once

#include <vector>

#include <uhmm/uffd.hpp>

namespace uhmm {

// Most readers fault_threads=auto starts: past this, each fault would wake
// more sleeping readers (every one polls the same descriptor) than it saves.
inline constexpr unsigned kMaxAutoReaders = 8;

// `configured` is RuntimeConfig::fault_threads: 0 (auto) gives one reader per
// CPU the process may run on, each kept on its CPU, when there are at most
// kMaxAutoReaders of them, and kMaxAutoReaders unpinned readers otherwise; a
// number gives that many readers, placed by the scheduler.
uffd::MonitorOptions place_readers(unsigned configured);

}  // namespace uhmm
