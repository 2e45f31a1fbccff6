// hmmctl's exit codes and the one way a command gives up: throw a Failure,
// which main() prints as "hmmctl: <message>" on stderr and turns into the
// exit code. Commands stay straight-line code; nothing below main() prints
// an error itself.
#pragma once

#include <stdexcept>
#include <string>

namespace hmmctl {

enum Exit : int {
    exit_ok = 0,       // the operation did what was asked
    exit_failed = 1,   // it could not: no process, no runtime, refused, an error reply, failed pages
    exit_usage = 2,    // the command line is wrong: nothing was attempted
};

class Failure : public std::runtime_error {
public:
    Failure(int exit_code, const std::string& message) : std::runtime_error(message), code_(exit_code) {}
    int exit_code() const noexcept { return code_; }

private:
    int code_;
};

[[noreturn]] inline void fail(const std::string& message) { throw Failure(exit_failed, message); }
[[noreturn]] inline void usage_error(const std::string& message) { throw Failure(exit_usage, message); }

}  // namespace hmmctl
