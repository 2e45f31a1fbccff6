// hmmctl's escaping of control characters for people (tools/hmmctl/
// printable.hpp): a command line with a newline or an escape sequence stays
// one line of plain text in a table or a message.
#include <catch2/catch.hpp>

#include <string>

#include "printable.hpp"

using hmmctl::printable;

TEST_CASE("ordinary text is kept as it is, UTF-8 and backslashes too", "[printable]") {
    CHECK(printable("") == "");
    CHECK(printable("sort -o out.txt big.txt") == "sort -o out.txt big.txt");
    CHECK(printable("caf\xc3\xa9 \xe2\x86\x92 ok") == "caf\xc3\xa9 \xe2\x86\x92 ok");
    CHECK(printable("C:\\dir\\n") == "C:\\dir\\n");
}

TEST_CASE("newlines, tabs and carriage returns are written as C escapes", "[printable]") {
    CHECK(printable("python3 -c import os\nprint(1)") == "python3 -c import os\\nprint(1)");
    CHECK(printable("a\tb\rc") == "a\\tb\\rc");
    CHECK(printable("\n") == "\\n");
}

TEST_CASE("other control characters, escape and DEL included, are written as \\xHH", "[printable]") {
    CHECK(printable("\x1b[2J") == "\\x1b[2J");
    CHECK(printable(std::string("a\0b", 3)) == "a\\x00b");
    CHECK(printable("\x07\x7f") == "\\x07\\x7f");
    CHECK(printable("\x1f ") == "\\x1f ");
}
