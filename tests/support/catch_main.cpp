// The shared Catch2 main of every test binary: skip with 77 when the binary
// says it cannot run here, otherwise run the cases.
#define CATCH_CONFIG_RUNNER
// No SIGSEGV/SIGBUS handlers of Catch's: a test binary is an ordinary
// program, whose fault signals the runtime may take for its guarded copies
// (lib/migrate/guarded_copy.hpp), as it does in the programs users run. A
// crash is still a failure: meson reports the signal (and under ASan the
// sanitizer prints its report).
#define CATCH_CONFIG_NO_POSIX_SIGNALS
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>

#include "skip.hpp"

__attribute__((weak)) std::optional<std::string> uhmm_test_skip_reason() { return std::nullopt; }

namespace uhmm::test {

void skip(const std::string& reason) {
    std::printf("SKIP: %s\n", reason.c_str());
    std::fprintf(stderr, "SKIP: %s\n", reason.c_str());
    std::fflush(nullptr);
    std::_Exit(77);
}

}  // namespace uhmm::test

int main(int argc, char** argv) {
    if (auto reason = uhmm_test_skip_reason()) uhmm::test::skip(*reason);
    return Catch::Session().run(argc, argv);
}
