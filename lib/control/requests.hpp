// The control protocol's requests (docs/CONTROL.md, "Requests"): one line in,
// replies out, against a Runtime. No sockets here: the server frames lines
// and sends what `emit` is given; tests call it directly.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <string_view>

#include <uhmm/runtime.hpp>

namespace uhmm::control {

// One serialized reply or progress line, without its newline.
using Emit = std::function<void(std::string&& line)>;

// Handles one request line: emits progress lines (migrate with "progress")
// and exactly one final reply. `stop` ends a long migration early (the
// runtime is going): the reply then counts what moved. Never throws.
void handle_request(Runtime& rt, std::string_view line, const Emit& emit, const std::atomic<bool>& stop) noexcept;

// The reply to a line that was too long, and to a refused or surplus peer.
std::string error_line(std::string_view code, std::string_view message);

}  // namespace uhmm::control
