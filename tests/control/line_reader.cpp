// The control protocol's framing and the fault-time histogram: pure code.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "base/latency_histogram.hpp"
#include "control/line_reader.hpp"

using uhmm::LatencyHistogram;
using uhmm::control::LineReader;

namespace {

std::vector<std::string> feed_all(LineReader& r, const std::vector<std::string>& chunks, bool finish = false) {
    std::vector<std::string> out;
    auto fn = [&](LineReader::Kind k, std::string_view line) {
        out.push_back(k == LineReader::Kind::too_long ? "<too long>" : std::string(line));
    };
    for (const auto& c : chunks) r.feed(c, fn);
    if (finish) r.finish(fn);
    return out;
}

}  // namespace

TEST_CASE("lines are split at newlines whatever the chunks") {
    LineReader r;
    CHECK(feed_all(r, {"{\"a\"", ":1}\n{\"b\":2}\n{\"c", "\":3}\n"}) ==
          std::vector<std::string>{"{\"a\":1}", "{\"b\":2}", "{\"c\":3}"});
    CHECK(feed_all(r, {"\n\n"}) == std::vector<std::string>{"", ""});
    // A last line without its newline counts at the end of the stream.
    CHECK(feed_all(r, {"tail"}, true) == std::vector<std::string>{"tail"});
}

TEST_CASE("a line over the limit is reported once and skipped to its newline") {
    LineReader r;
    const std::string big(LineReader::kMaxLine, 'x');   // with its newline: one byte over
    CHECK(feed_all(r, {big.substr(0, 1000), big.substr(1000), "more\n", "next\n"}) ==
          std::vector<std::string>{"<too long>", "next"});
    // Exactly at the limit (newline included) is fine.
    const std::string fits(LineReader::kMaxLine - 1, 'y');
    const auto out = feed_all(r, {fits + "\n"});
    REQUIRE(out.size() == 1);
    CHECK(out[0].size() == fits.size());
    // Endless garbage without a newline costs one report, not memory.
    LineReader g;
    std::size_t reports = 0;
    const std::string chunk(1 << 16, 'z');
    for (int i = 0; i < 64; ++i) g.feed(chunk, [&](LineReader::Kind, std::string_view) { ++reports; });
    CHECK(reports == 1);
}

TEST_CASE("the histogram's percentiles are within a bucket of the truth") {
    LatencyHistogram h;
    CHECK(h.percentile(0.5) == 0);
    for (std::uint64_t v = 1; v <= 10000; ++v) h.record(v * 100);   // 100 ns .. 1 ms, uniform
    CHECK(h.count() == 10000);
    const auto p50 = h.percentile(0.5), p99 = h.percentile(0.99);
    CHECK(p50 >= 500000);
    CHECK(p50 <= 500000 * 1.25);
    CHECK(p99 >= 990000);
    CHECK(p99 <= 990000 * 1.25);
    LatencyHistogram small;
    for (int i = 0; i < 3; ++i) small.record(2);
    CHECK(small.percentile(0.99) == 2);
}
