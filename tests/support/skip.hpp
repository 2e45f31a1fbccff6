// Skipping, the way meson and liburing's tests mean it: exit status 77.
//
// Debian's Catch2 is v2 and has no SKIP(). A test binary whose cases need a
// privilege or a resource (userfaultfd, hugepages, a GPU) defines
// uhmm_test_skip_reason(); when it returns a reason, the shared main prints it
// and exits 77 before any case runs, and meson reports the binary as skipped.
// A skip is never a pass.
#pragma once

#include <optional>
#include <string>

// Defined (weakly) by the shared main as "never skip"; a test binary that
// needs something overrides it.
std::optional<std::string> uhmm_test_skip_reason();

namespace uhmm::test {

// Exit 77 now, with the reason on stdout and stderr.
[[noreturn]] void skip(const std::string& reason);

// Why this process cannot open a userfaultfd, or nullopt when it can.
std::optional<std::string> userfaultfd_unavailable();

}  // namespace uhmm::test
