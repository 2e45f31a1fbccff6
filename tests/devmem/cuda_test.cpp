// The cuda:0 backend on a real GPU. Exits 77 with CUDA's own error text when
// no GPU is usable (no device, no driver), so that a machine without one
// reports a skip, never a pass.
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <vector>

#include "arena_util.hpp"
#include "skip.hpp"

using namespace uhmm::devmem;
using uhmm::devmem::test::make_arena;

namespace {

int token;

ArenaSpec cuda_spec() { return parse_arena_spec("cuda:0", "8M", false).value(); }

}  // namespace

std::optional<std::string> uhmm_test_skip_reason() {
    std::string why;
    auto arena = Arena::create(cuda_spec(), &why);
    if (!arena) return "no usable GPU: " + why;
    return std::nullopt;
}

TEST_CASE("a cuda arena hands out pages of GPU memory at fixed offsets from cuda_base") {
    auto arena = make_arena(cuda_spec());
    const auto v = arena->view();
    CHECK(v.kind == ArenaKind::cuda);
    CHECK(v.base == nullptr);
    CHECK(v.fd == -1);
    CHECK(v.cuda_device == 0);
    REQUIRE(v.cuda_base != nullptr);
    const auto owner = arena->add_owner(&token).value();
    const auto page = arena->alloc(owner).value();
    CHECK(arena->address(page) == nullptr);
    std::vector<unsigned char> out(kPageSize, 0x3c), back(kPageSize, 0);
    auto* dev = static_cast<char*>(v.cuda_base) + ArenaView::offset_of(page);
    REQUIRE(cudaMemcpy(dev, out.data(), kPageSize, cudaMemcpyHostToDevice) == cudaSuccess);
    REQUIRE(cudaMemcpy(back.data(), dev, kPageSize, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(back == out);
    REQUIRE_FALSE(arena->put(page));
}

TEST_CASE("a cuda arena grows to its limit and then says it is full") {
    auto arena = make_arena(cuda_spec());
    const auto owner = arena->add_owner(&token).value();
    std::vector<PageIndex> pages(arena->stats().limit_pages);
    CHECK(arena->alloc_run(pages.size(), owner, pages).value() >= 1);
    CHECK(arena->alloc(owner).error() == Errc::arena_full);
    for (const PageIndex p : pages) REQUIRE_FALSE(arena->put(p));
}
