// The CUDA engine: with a GPU, bytes go to device memory and back; without
// one (or without CUDA at build time) the binary exits 77 printing CUDA's own
// error text, which is what a user of a cuda arena would see.
#include <catch2/catch.hpp>

#include "arena_fixture.hpp"
#include "skip.hpp"
#include "uhmm_build_config.hpp"

#if UHMM_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

using namespace uhmm;
using namespace uhmm::test;

namespace {

devmem::ArenaView cuda_view(void* dev, std::size_t size) {
    devmem::ArenaView v;
    v.kind = devmem::ArenaKind::cuda;
    v.cuda_device = 0;
    v.cuda_base = dev;
    v.size = size;
    return v;
}

}  // namespace

std::optional<std::string> uhmm_test_skip_reason() {
#if !UHMM_HAVE_CUDA
    return "built without CUDA (meson option cuda, or no toolkit found)";
#else
    auto e = migrate::make_copy_engine(migrate::EngineKind::cuda, cuda_view(nullptr, 0));
    if (!e.ok()) return "the CUDA engine cannot run here: " + e.error().message();
    return std::nullopt;
#endif
}

#if UHMM_HAVE_CUDA
TEST_CASE("pages reach GPU memory and come back byte for byte") {
    constexpr std::size_t kBytes = 4u << 20;
    void* dev = nullptr;
    REQUIRE(cudaMalloc(&dev, kBytes) == cudaSuccess);
    auto e = migrate::make_copy_engine(migrate::EngineKind::automatic, cuda_view(dev, kBytes));
    REQUIRE(e.ok());
    REQUIRE((*e)->kind() == migrate::EngineKind::cuda);
    auto host = map_anon(kBytes);
    fill(host.bytes(), 91);
    std::vector<migrate::CopyOp> ops;
    for (std::size_t p = 0; p < kBytes / kPage; ++p)
        ops.push_back({host.data() + p * kPage, (kBytes / kPage - 1 - p) * kPage, kPage});
    REQUIRE_FALSE((*e)->submit(migrate::Direction::to_device, ops).wait());
    auto back = map_anon(kBytes);
    for (auto& op : ops) op.host = back.data() + (static_cast<std::byte*>(op.host) - host.data());
    REQUIRE_FALSE((*e)->submit(migrate::Direction::to_host, ops).wait());
    CHECK(mismatch(back.bytes(), 91) == -1);
    cudaFree(dev);
}

TEST_CASE("a cuda staging buffer is pinned memory the engine copies through") {
    constexpr std::size_t kBytes = 2u << 20;
    void* dev = nullptr;
    REQUIRE(cudaMalloc(&dev, kBytes) == cudaSuccess);
    auto e = migrate::make_copy_engine(migrate::EngineKind::cuda, cuda_view(dev, kBytes));
    REQUIRE(e.ok());
    auto buf = (*e)->acquire_staging();
    REQUIRE(buf.ok());
    cudaPointerAttributes attr{};
    REQUIRE(cudaPointerGetAttributes(&attr, buf->data()) == cudaSuccess);
    CHECK(attr.type == cudaMemoryTypeHost);
    fill(buf->bytes(), 92);
    const migrate::CopyOp op{buf->data(), 0, static_cast<std::uint32_t>(buf->size())};
    REQUIRE_FALSE((*e)->submit(migrate::Direction::to_device, {&op, 1}).wait());
    std::memset(buf->data(), 0, buf->size());
    REQUIRE_FALSE((*e)->submit(migrate::Direction::to_host, {&op, 1}).wait());
    CHECK(mismatch(buf->bytes(), 92) == -1);
    cudaFree(dev);
}
#endif
