// uhmm::test::userfaultfd_unavailable(): the reason a test binary that needs
// userfaultfd skips, taken from the library's own probe so that the message is
// the one users see.
#include <uhmm/uffd.hpp>

#include "skip.hpp"

namespace uhmm::test {

std::optional<std::string> userfaultfd_unavailable() {
    const auto& p = uffd::probe();
    if (p.available) return std::nullopt;
    return p.reason;
}

}  // namespace uhmm::test
