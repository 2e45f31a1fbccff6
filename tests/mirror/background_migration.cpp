// Background (non-blockable) migrations against a device that is busy for
// real: a SoftDevice whose writer thread keeps its lock taken while a
// second thread migrates its pages with blockable = false. Each migration
// either moves every page or gives up with EAGAIN and moves none; nothing
// the device or the CPU wrote is ever lost or duplicated.
#include <catch2/catch.hpp>

#include <uhmm/soft_device.hpp>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "runtime_fixture.hpp"
#include "skip.hpp"

using namespace uhmm;
using namespace uhmm::test;

std::optional<std::string> uhmm_test_skip_reason() { return userfaultfd_unavailable(); }

TEST_CASE("non-blockable migrations race a busy SoftDevice: all or nothing, data intact") {
    auto rt = make_runtime();
    constexpr std::size_t pages = 32, len = pages * kPage;
    ManagedPattern m(*rt, len);
    auto made = mirror::SoftDevice::create(*rt, m.data(), len);
    REQUIRE(made.ok());
    auto& dev = **made;

    // The device writes round r into every page, the whole buffer in one
    // write that holds the device lock while it copies: a migration's
    // invalidation often finds it busy.
    constexpr int rounds = 200;
    std::atomic<bool> done{false};
    std::atomic<int> device_errors{0};
    std::thread writer([&] {
        std::vector<std::uint32_t> data(len / 4);
        for (int r = 1; r <= rounds; ++r) {
            for (std::size_t i = 0; i < pages; ++i)
                std::fill_n(data.begin() + static_cast<std::ptrdiff_t>(i * kPage / 4), kPage / 4,
                            static_cast<std::uint32_t>(r * 1000 + i));
            if (!dev.write(m.data(), len, data.data()).ok()) ++device_errors;
        }
        done = true;
    });
    std::size_t moved = 0, refused = 0, partial = 0;
    const Runtime::MigrateOptions background{nullptr, false};
    while (!done) {
        auto r = rt->migrate(m.data(), len, Target::device, background);
        REQUIRE(r.ok());
        if (r->error == std::errc::resource_unavailable_try_again) {
            ++refused;
            if (r->migrated != 0 || r->failed != pages) ++partial;
        } else {
            ++moved;
        }
    }
    writer.join();
    INFO("moved " << moved << ", refused " << refused);
    CHECK(device_errors == 0);
    CHECK(partial == 0);
    CHECK(rt->stats().migrations_would_block == refused);
    // The last round is what every page holds, seen by the CPU and the device.
    std::vector<std::uint32_t> back(kPage / 4);
    for (std::size_t i = 0; i < pages; ++i) {
        INFO("page " << i);
        const auto want = static_cast<std::uint32_t>(rounds * 1000 + i);
        REQUIRE(dev.read(m.page(i), kPage, back.data()).ok());
        CHECK(std::all_of(back.begin(), back.end(), [&](auto v) { return v == want; }));
        const auto* cpu = reinterpret_cast<const std::uint32_t*>(m.page(i));
        CHECK(std::all_of(cpu, cpu + kPage / 4, [&](auto v) { return v == want; }));
    }
}
