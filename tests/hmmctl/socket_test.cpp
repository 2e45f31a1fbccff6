// The control socket fed what no client should send: random bytes,
// truncated JSON, lines over the limit, wrong types, unknown commands,
// values out of range, too many connections, a client that never reads.
// Every request gets its error reply (docs/CONTROL.md), the connection stays
// usable, and the process keeps running with its data intact and unmoved.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <random>
#include <thread>

#include "fixture.hpp"

using namespace uhmm::hmmctl_test;

namespace {

nlohmann::json reply(Raw& c) {
    const auto line = c.line();
    INFO("no reply line");
    REQUIRE(line);
    const auto j = nlohmann::json::parse(*line, nullptr, false);
    INFO("reply: " << *line);
    REQUIRE(j.is_object());
    return j;
}

// An error reply with `error`, echoing `id` when given.
void expect_error(Raw& c, const std::string& error, const nlohmann::json& id = nullptr) {
    const auto j = reply(c);
    INFO(j.dump());
    CHECK(j.value("ok", true) == false);
    CHECK(j.value("error", "") == error);
    CHECK(j.contains("message"));
    if (!id.is_null()) CHECK(j.value("id", nlohmann::json()) == id);
}

void expect_intact(const Fixture& f, Target& t) {
    CHECK(t.alive());
    CHECK(t.ask("verify") == "OK");
    const Ran r = f.ctl({"ranges", std::to_string(t.pid()), "--json"});
    INFO(r.describe());
    CHECK(r.status == 0);
    CHECK(u64(range_holding(r.json(), t.addr(), t.len()), "device_pages") == 0);
}

std::string migrate_request(std::uint64_t addr, std::uint64_t len, const std::string& to, int id) {
    return nlohmann::json{{"cmd", "migrate"}, {"addr", addr}, {"len", len}, {"to", to}, {"id", id}}.dump() + "\n";
}

}  // namespace

TEST_CASE("random bytes and truncated JSON and wrong types and unknown commands get error replies", "[socket]") {
    Fixture f;
    auto t = f.managed_target(16);
    Raw c(f.socket_of(t->pid()));
    REQUIRE(c.connected());

    std::mt19937_64 rng(7);
    for (int i = 0; i < 50; ++i) {
        std::string junk(1 + rng() % 3000, '\0');
        for (auto& ch : junk) {
            do ch = static_cast<char>(rng());
            while (ch == '\n');
        }
        junk[0] = static_cast<char>('!' + rng() % 20);   // never a line of spaces only, nor "{" by chance
        REQUIRE(c.send(junk + "\n"));
        const auto j = reply(c);
        INFO(j.dump());
        CHECK(j.value("ok", true) == false);
        const std::string error = j.value("error", "");
        CHECK((error == "PARSE" || error == "BAD_REQUEST"));
    }

    for (const char* truncated : {"{\"cmd\":\"ranges\"", "{\"cmd\":\"migrate\",\"addr\":", "{\"cm", "{", "[1,2"}) {
        REQUIRE(c.send(std::string(truncated) + "\n"));
        expect_error(c, "PARSE");
    }

    const std::uint64_t a = t->addr();
    const std::vector<std::pair<nlohmann::json, const char*>> wrong = {
        {{1, 2, 3}, nullptr},
        {"hello", nullptr},
        {42, nullptr},
        {{{"id", 1}}, "missing cmd"},
        {{{"cmd", 42}, {"id", 2}}, "cmd not a string"},
        {{{"cmd", nullptr}, {"id", 3}}, "cmd null"},
        {{{"cmd", "migrate"}, {"addr", hex(a)}, {"len", 4096}, {"to", "device"}, {"id", 4}}, "addr a string"},
        {{{"cmd", "migrate"}, {"addr", a}, {"len", "4K"}, {"to", "device"}, {"id", 5}}, "len a string"},
        {{{"cmd", "migrate"}, {"addr", a}, {"len", 4096.5}, {"to", "device"}, {"id", 6}}, "len a fraction"},
        {{{"cmd", "migrate"}, {"addr", a}, {"len", 4096}, {"id", 7}}, "to missing"},
        {{{"cmd", "migrate"}, {"addr", a}, {"len", 4096}, {"to", 1}, {"id", 8}}, "to a number"},
        {{{"cmd", "migrate"}, {"len", 4096}, {"to", "device"}, {"id", 9}}, "addr missing"},
        {{{"cmd", "policy"}, {"spec", 5}, {"id", 10}}, "spec a number"},
        {{{"cmd", "policy"}, {"id", 11}}, "spec missing"},
    };
    for (const auto& [request, what] : wrong) {
        INFO(request.dump());
        REQUIRE(c.send(request.dump() + "\n"));
        const auto id = request.is_object() && request.contains("id") ? request["id"] : nlohmann::json();
        expect_error(c, "BAD_REQUEST", id);
    }

    for (const char* cmd : {"frobnicate", "HELLO", "", "migrate "}) {
        REQUIRE(c.send(nlohmann::json{{"cmd", cmd}, {"id", "x"}}.dump() + "\n"));
        expect_error(c, "UNKNOWN_CMD", "x");
    }

    // Values out of range: EINVAL; outside the managed ranges: EFAULT.
    REQUIRE(c.send(migrate_request(a + 1, 4096, "device", 20)));
    expect_error(c, "EINVAL", 20);
    REQUIRE(c.send(migrate_request(a, 0, "device", 21)));
    expect_error(c, "EINVAL", 21);
    REQUIRE(c.send(migrate_request(a, 4097, "device", 22)));
    expect_error(c, "EINVAL", 22);
    REQUIRE(c.send(migrate_request(a, ~std::uint64_t{4095}, "device", 23)));
    expect_error(c, "EINVAL", 23);
    REQUIRE(c.send(migrate_request(a, 4096, "gpu", 24)));
    expect_error(c, "EINVAL", 24);
    REQUIRE(c.send(migrate_request(4096, 4096, "device", 25)));
    expect_error(c, "EFAULT", 25);
    REQUIRE(c.send(nlohmann::json{{"cmd", "policy"}, {"spec", "bogus"}, {"id", 26}}.dump() + "\n"));
    expect_error(c, "EINVAL", 26);

    // Still usable; requests sent together are answered in order.
    REQUIRE(c.send("{\"cmd\":\"hello\",\"id\":101}\n{\"cmd\":\"nope\",\"id\":102}\n{\"cmd\":\"ranges\",\"id\":103}\n"));
    const auto h = reply(c);
    CHECK(h.value("ok", false));
    CHECK(h.value("id", 0) == 101);
    CHECK(h.value("protocol", 0) == 1);
    expect_error(c, "UNKNOWN_CMD", 102);
    const auto r = reply(c);
    CHECK(r.value("ok", false));
    CHECK(r.value("id", 0) == 103);
    expect_intact(f, *t);
}

TEST_CASE("a line of 65536 bytes is served and a longer one is TOO_LONG and never runs", "[socket]") {
    Fixture f;
    auto t = f.managed_target(16);
    Raw c(f.socket_of(t->pid()));
    REQUIRE(c.connected());

    auto padded = [](const std::string& json, std::size_t line_bytes) {   // newline included
        return json + std::string(line_bytes - json.size() - 1, ' ') + "\n";
    };
    REQUIRE(c.send(padded("{\"cmd\":\"hello\",\"id\":1}", 65536)));
    auto j = reply(c);
    CHECK(j.value("ok", false));
    CHECK(j.value("id", 0) == 1);

    REQUIRE(c.send(padded("{\"cmd\":\"hello\",\"id\":2}", 65537)));
    expect_error(c, "TOO_LONG");
    // A migration in an oversized line must not run.
    const std::string big = migrate_request(t->addr(), t->len(), "device", 3);
    REQUIRE(c.send(padded(big.substr(0, big.size() - 1), 200000)));
    expect_error(c, "TOO_LONG");
    // A megabyte of junk without JSON in it, sent in pieces.
    for (int i = 0; i < 16; ++i) REQUIRE(c.send(std::string(65536, 'x')));
    REQUIRE(c.send("\n"));
    expect_error(c, "TOO_LONG");

    REQUIRE(c.send("{\"cmd\":\"hello\",\"id\":4}\n"));
    j = reply(c);
    CHECK(j.value("ok", false));
    CHECK(j.value("id", 0) == 4);
    expect_intact(f, *t);
}

TEST_CASE("the seventeenth connection gets EBUSY and is closed", "[socket]") {
    Fixture f;
    auto t = f.managed_target(16);
    std::vector<std::unique_ptr<Raw>> held;
    for (int i = 0; i < 16; ++i) {
        held.push_back(std::make_unique<Raw>(f.socket_of(t->pid())));
        REQUIRE(held.back()->connected());
        REQUIRE(held.back()->send("{\"cmd\":\"hello\",\"id\":1}\n"));
        CHECK(reply(*held.back()).value("ok", false));
    }
    Raw extra(f.socket_of(t->pid()));
    if (extra.connected()) {   // the kernel's backlog took it; the server answers and closes
        expect_error(extra, "EBUSY");
        CHECK(extra.closed_by_server());
    }
    const Ran busy = f.ctl({"stat", std::to_string(t->pid())});
    INFO(busy.describe());
    CHECK(busy.status == 1);
    CHECK(one_message(busy.err, "busy"));

    held.pop_back();
    bool served = false;
    for (int i = 0; i < 50 && !served; ++i) {   // once the server has seen the close
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        served = f.ctl({"stat", std::to_string(t->pid())}).status == 0;
    }
    CHECK(served);
    held.clear();
    expect_intact(f, *t);
}

TEST_CASE("a client that never reads its replies is disconnected", "[socket]") {
    Fixture f;
    auto t = f.managed_target(16);
    Raw c(f.socket_of(t->pid()));
    REQUIRE(c.connected());
    REQUIRE(::fcntl(c.fd(), F_SETFL, O_NONBLOCK) == 0);
    std::string requests;
    for (int i = 0; i < 1000; ++i) requests += "{\"cmd\":\"stat\"}\n";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool closed = false;
    std::size_t sent = 0;
    while (!closed && std::chrono::steady_clock::now() < deadline && sent < (std::size_t{256} << 20)) {
        const ssize_t n = ::send(c.fd(), requests.data(), requests.size(), MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pollfd p{c.fd(), POLLOUT, 0};
            ::poll(&p, 1, 100);
            closed = (p.revents & (POLLHUP | POLLERR)) != 0;
        } else {
            closed = true;   // EPIPE, ECONNRESET
        }
    }
    INFO("sent " << sent << " bytes of requests without reading a reply");
    CHECK((closed || c.closed_by_server(10)));
    expect_intact(f, *t);
}
