// The runtime's logger: one spdlog *async* logger named "uhmm" on stderr.
//
// Async because the thread that resolves faults may log (DESIGN.md: logging
// from that thread goes through an async logger or not at all): the message is
// queued to spdlog's own thread, so a slow terminal can never stall a fault.
// When the queue is full, messages are dropped rather than blocking.
#pragma once

#include <spdlog/spdlog.h>

namespace uhmm::log {

// The shared logger; created on first use. Never returns null.
spdlog::logger& get();

// Set the level by name (off, error, warn, info, debug); false for a bad name.
bool set_level(std::string_view name);

// Flush queued messages (tests, and before the process exits).
void flush();

}  // namespace uhmm::log
