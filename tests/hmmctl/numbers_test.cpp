// hmmctl's command-line numbers (tools/hmmctl/numbers.hpp): what is taken,
// what is refused, and that nothing wraps around.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include "numbers.hpp"

using hmmctl::parse_address;
using hmmctl::parse_length;
using hmmctl::parse_pid;

TEST_CASE("addresses are decimal or 0x hex", "[numbers]") {
    std::string why;
    CHECK(parse_address("4096", "ADDR", &why) == 4096u);
    CHECK(parse_address("0x1000", "ADDR", &why) == 4096u);
    CHECK(parse_address("0X7fFF00001000", "ADDR", &why) == 0x7fff00001000u);
    CHECK(parse_address("0", "ADDR", &why) == 0u);
    CHECK(parse_address("18446744073709551615", "ADDR", &why) == UINT64_MAX);
    CHECK(parse_address("0xffffffffffffffff", "ADDR", &why) == UINT64_MAX);
}

TEST_CASE("lengths take K, M, G and T as binary multiples", "[numbers]") {
    std::string why;
    CHECK(parse_length("4K", "LEN", &why) == 4096u);
    CHECK(parse_length("4k", "LEN", &why) == 4096u);
    CHECK(parse_length("64M", "LEN", &why) == 64u << 20);
    CHECK(parse_length("1G", "LEN", &why) == 1u << 30);
    CHECK(parse_length("2T", "LEN", &why) == std::uint64_t{2} << 40);
    CHECK(parse_length("0x10M", "LEN", &why) == 16u << 20);
    CHECK(parse_length("0x1000", "LEN", &why) == 4096u);   // hex digits are never suffixes
    CHECK(parse_length("0x1b", "LEN", &why) == 0x1bu);
    CHECK(parse_length("0", "LEN", &why) == 0u);   // zero is the caller's to refuse
}

TEST_CASE("garbage is refused with a line naming the argument", "[numbers]") {
    for (const char* bad : {"", "0x", "x10", "12q", "-4096", "+4096", " 4096", "4096 ", "4.5M", "1e6", "4KB",
                            "4KK", "K", "0xg", "１２"}) {
        std::string why;
        INFO("input '" << bad << "'");
        CHECK_FALSE(parse_length(bad, "LEN", &why));
        CHECK(why.rfind("LEN", 0) == 0);
    }
    std::string why;
    CHECK_FALSE(parse_address("4K", "ADDR", &why));   // no suffixes on addresses
    CHECK(why.rfind("ADDR", 0) == 0);
}

TEST_CASE("values over 2^64-1 are refused, never wrapped", "[numbers]") {
    std::string why;
    CHECK_FALSE(parse_address("18446744073709551616", "ADDR", &why));
    CHECK(why.find("too large") != std::string::npos);
    CHECK_FALSE(parse_address("0x10000000000000000", "ADDR", &why));
    CHECK_FALSE(parse_length("99999999999999999999", "LEN", &why));
    CHECK_FALSE(parse_length("16777216T", "LEN", &why));   // 2^24 * 2^40 = 2^64
    CHECK(parse_length("16777215T", "LEN", &why) == std::uint64_t{16777215} << 40);
    CHECK_FALSE(parse_length("17179869184G", "LEN", &why));   // 2^34 * 2^30
}

TEST_CASE("process ids are positive decimal numbers", "[numbers]") {
    std::string why;
    CHECK(parse_pid("1", &why) == 1);
    CHECK(parse_pid("4194304", &why) == 4194304);
    CHECK(parse_pid("2147483647", &why) == 2147483647);
    for (const char* bad : {"", "0", "-1", "0x10", "12x", "2147483648", "99999999999999999999", " 1"}) {
        INFO("input '" << bad << "'");
        CHECK_FALSE(parse_pid(bad, &why));
        CHECK(why.rfind("PID", 0) == 0);
    }
}
