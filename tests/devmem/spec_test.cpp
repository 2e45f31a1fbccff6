// parse_arena_spec / parse_size / to_string: the UHMM_CONF arena keys.
#include <catch2/catch.hpp>

#include <uhmm/devmem.hpp>

using namespace uhmm::devmem;

namespace {

std::string error_of(std::string_view arena, std::string_view size, bool reserve = false) {
    std::string why;
    auto spec = parse_arena_spec(arena, size, reserve, &why);
    REQUIRE_FALSE(spec.ok());
    CHECK(spec.error() == std::errc::invalid_argument);
    CHECK(why.find('\n') == std::string::npos);
    return why;
}

}  // namespace

TEST_CASE("each backend name parses, with its node or device number") {
    auto hp = parse_arena_spec("hugepage", "1G", true);
    REQUIRE(hp.ok());
    CHECK(hp->backend == Backend::hugepage);
    CHECK(hp->size == (1u << 30));
    CHECK(hp->reserve);

    auto mf = parse_arena_spec("memfd", "64M", false);
    REQUIRE(mf.ok());
    CHECK(mf->backend == Backend::memfd);

    auto numa = parse_arena_spec("numa:3", "2M", false);
    REQUIRE(numa.ok());
    CHECK(numa->backend == Backend::numa);
    CHECK(numa->index == 3);

    auto cuda = parse_arena_spec("cuda:1", "4M", false);
    REQUIRE(cuda.ok());
    CHECK(cuda->backend == Backend::cuda);
    CHECK(cuda->index == 1);
}

TEST_CASE("an unknown backend is refused naming the key and the accepted values") {
    const auto why = error_of("gpu", "64M");
    CHECK(why.find("arena=gpu") != std::string::npos);
    CHECK(why.find("hugepage, memfd, numa:NODE, cuda:DEVICE") != std::string::npos);
    for (const char* bad : {"numa:", "numa:x", "numa:-1", "numa:1x", "cuda:", "Memfd", ""}) {
        INFO(bad);
        CHECK(error_of(bad, "64M").find("arena=") == 0);
    }
}

TEST_CASE("sizes take K, M, G and T suffixes and round up to whole chunks") {
    CHECK(parse_size("4096").value() == 4096);
    CHECK(parse_size("4k").value() == 4096);
    CHECK(parse_size("512M").value() == (512u << 20));
    CHECK(parse_size("2G").value() == (std::size_t{2} << 30));
    CHECK(parse_size("1T").value() == (std::size_t{1} << 40));
    CHECK(parse_arena_spec("memfd", "3M", false)->size == (4u << 20));
    CHECK(parse_arena_spec("memfd", "2097153", false)->size == (4u << 20));
    CHECK(parse_arena_spec("memfd", "2M", false)->size == kChunkSize);
}

TEST_CASE("a bad or out-of-range size is refused naming arena_size") {
    CHECK(error_of("memfd", "12Q").find("arena_size=12Q: bad size") == 0);
    CHECK(error_of("memfd", "").find("arena_size=: bad size") == 0);
    CHECK(error_of("memfd", "M").find("bad size") != std::string::npos);
    CHECK(error_of("memfd", "1M").find("out of range") != std::string::npos);
    CHECK(error_of("memfd", "17T").find("out of range") != std::string::npos);
    CHECK(error_of("memfd", "99999999999999999999G").find("arena_size=") == 0);
    CHECK_FALSE(parse_size("-1").ok());
    CHECK_FALSE(parse_size("1.5G").ok());
}

TEST_CASE("arena_reserve=on is refused for backends other than hugepage") {
    CHECK(error_of("memfd", "64M", true).find("arena_reserve=on") == 0);
    CHECK(error_of("numa:0", "64M", true).find("arena=numa:0") != std::string::npos);
}

TEST_CASE("a spec prints as the keys that would produce it") {
    CHECK(to_string(parse_arena_spec("numa:2", "3M", false).value()) ==
          "arena=numa:2,arena_size=4M,arena_reserve=off");
    CHECK(to_string(parse_arena_spec("hugepage", "1024M", true).value()) ==
          "arena=hugepage,arena_size=1G,arena_reserve=on");
    const auto again = parse_arena_spec("cuda", "1G", false);
    CHECK_FALSE(again.ok());
}
