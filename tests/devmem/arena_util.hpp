// What the devmem tests share: building an arena or failing with its reason.
#pragma once

#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include <uhmm/devmem.hpp>

namespace uhmm::devmem::test {

inline ArenaSpec memfd_spec(std::size_t size, std::size_t initial = kChunkSize) {
    ArenaSpec spec;
    spec.backend = Backend::memfd;
    spec.size = size;
    spec.initial = initial;
    return spec;
}

inline std::unique_ptr<Arena> make_arena(const ArenaSpec& spec) {
    std::string why;
    auto arena = Arena::create(spec, &why);
    INFO("Arena::create(" << to_string(spec) << "): " << why);
    REQUIRE(arena.ok());
    return std::move(arena).value();
}

}  // namespace uhmm::devmem::test
