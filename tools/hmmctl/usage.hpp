// The one line hmmctl prints for a command line that CLI11 refused.
//
// CLI11's own messages fall short in two places: a command it does not know
// (or an option before any command) is reported as "A subcommand is
// required", and a word it did not expect as "The following argument was not
// expected". This names the word, says whether it was taken for a command or
// an option, and where the help is.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace hmmctl {

// After app.parse(...) threw `error`: the message, without "hmmctl: ".
std::string usage_message(const CLI::App& app, const CLI::ParseError& error);

}  // namespace hmmctl
