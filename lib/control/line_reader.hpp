// Splits a byte stream into newline-terminated lines of at most kMaxLine
// bytes (the control protocol's framing, docs/CONTROL.md). A longer line is
// reported once as too long and the rest of it, up to its newline, dropped:
// one hostile line costs its sender an error, not the server its memory.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace uhmm::control {

class LineReader {
public:
    static constexpr std::size_t kMaxLine = 65536;   // newline included

    enum class Kind { line, too_long };
    // Feeds `bytes`; calls fn(Kind, std::string_view line) for each complete
    // line (without its newline; empty for too_long), in order.
    template <class Fn>
    void feed(std::string_view bytes, Fn&& fn) {
        while (!bytes.empty()) {
            const auto nl = bytes.find('\n');
            const std::string_view part = bytes.substr(0, nl);
            bytes = nl == std::string_view::npos ? std::string_view{} : bytes.substr(nl + 1);
            if (!dropping_) {
                if (buf_.size() + part.size() + 1 > kMaxLine) {
                    buf_.clear();
                    dropping_ = true;
                    fn(Kind::too_long, std::string_view{});
                } else {
                    buf_.append(part);
                }
            }
            if (nl == std::string_view::npos) return;
            if (!dropping_) fn(Kind::line, std::string_view(buf_));
            buf_.clear();
            dropping_ = false;
        }
    }
    // At end of stream: a last line without its newline counts as a line.
    template <class Fn>
    void finish(Fn&& fn) {
        if (!dropping_ && !buf_.empty()) fn(Kind::line, std::string_view(buf_));
        buf_.clear();
        dropping_ = false;
    }

private:
    std::string buf_;
    bool dropping_ = false;
};

}  // namespace uhmm::control
