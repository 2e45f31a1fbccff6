// ArenaBackend: where an arena's memory comes from (the small internal interface).
//
// An arena asks its backend for one thing as it grows — "make chunk N usable,
// populated" — and for its ArenaView and a line describing it. Every factory
// maps and populates the arena's initial chunks before it returns, so that a
// backend that cannot deliver memory is refused (or falls back, for hugepage)
// at creation, with a reason, rather than at the first allocation.
#pragma once

#include <memory>
#include <string>
#include <system_error>

#include <uhmm/devmem.hpp>

namespace uhmm::devmem {

class ArenaBackend {
public:
    virtual ~ArenaBackend() = default;
    // Map and populate chunk `index` ([index * kChunkSize, +kChunkSize)).
    // Called with increasing indices, under the allocator's growth lock.
    virtual std::error_code map_chunk(std::size_t index) = 0;
    // kind, fd, base and the cuda fields; the arena fills in size.
    virtual ArenaView view() const = 0;
    // What is in use and why ("hugetlb memfd (2 MiB pages); reserved 4 ...").
    virtual std::string describe() const = 0;
};

// Each with spec.initial / kChunkSize chunks mapped; `*why` says why not.
Result<std::unique_ptr<ArenaBackend>> make_backend(const ArenaSpec& spec, std::string* why);
Result<std::unique_ptr<ArenaBackend>> make_memfd_backend(const ArenaSpec& spec, bool thp_advise,
                                                    std::string note, std::string* why);
Result<std::unique_ptr<ArenaBackend>> make_hugetlb_backend(const ArenaSpec& spec, std::string* why);
Result<std::unique_ptr<ArenaBackend>> make_numa_backend(const ArenaSpec& spec, std::string* why);
Result<std::unique_ptr<ArenaBackend>> make_cuda_backend(const ArenaSpec& spec, std::string* why);

// Map chunks [0, n) through `backend`, for the factories; `*why` names the
// chunk and the error.
std::error_code map_initial(ArenaBackend& backend, const ArenaSpec& spec, std::string* why);

// The factories' last step: map the initial chunks of a freshly built
// backend and hand it over; on failure `*why` reads "<name>: <what failed>".
template <class Backend>
Result<std::unique_ptr<ArenaBackend>> finish_backend(std::unique_ptr<Backend> backend, const ArenaSpec& spec,
                                                     const std::string& name, std::string* why) {
    std::string sub;
    if (auto ec = map_initial(*backend, spec, &sub)) {
        if (why) *why = name + ": " + sub;
        return ec;
    }
    return std::unique_ptr<ArenaBackend>(std::move(backend));
}

// "what: strerror (errno name)" in one line.
std::string describe_error(std::string_view what, std::error_code ec);

}  // namespace uhmm::devmem
