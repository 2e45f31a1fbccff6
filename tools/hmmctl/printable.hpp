// Text a process controls (its command line, a server's message, a path from
// the environment) made safe to print for people: one line, and nothing a
// terminal would obey. A command line may hold a newline, which would break
// a table's rows, or an escape sequence, which would redraw the screen.
#pragma once

#include <string>
#include <string_view>

namespace hmmctl {

// `text` with each control character (bytes 0x00-0x1f and 0x7f) written as a
// C escape: \n, \r and \t by name, the others as \xHH. Everything else,
// backslashes and UTF-8 included, is kept as it is. (--json output needs
// none of this: JSON escapes them itself.)
std::string printable(std::string_view text);

}  // namespace hmmctl
