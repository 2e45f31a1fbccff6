// CUDA's runtime library, loaded when a cuda:N arena or engine is asked for
// and never before.
//
// Linking libcudart made every process that uses uhmm load it at start (and
// every preloaded exec pay for it), GPU or not. Now only the types come
// from the headers; the functions are looked up with dlopen/dlsym on first
// use, from libcudart.so.<the major version built against>, found through
// the usual search (LD_LIBRARY_PATH, ld.so.cache), then $CUDA_HOME/lib64,
// then the toolkit directory meson found.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

namespace uhmm::base {

// Every CUDA runtime function uhmm calls. Names are the macros' expansions
// (cudaGetDeviceProperties is cudaGetDeviceProperties_v2 since CUDA 12).
#define UHMM_CUDART_FUNCTIONS(X)                                                                    \
    X(cudaGetDeviceCount) X(cudaSetDevice) X(cudaGetDeviceProperties) X(cudaMalloc) X(cudaFree)    \
    X(cudaMemset) X(cudaMemcpy) X(cudaMemcpyAsync) X(cudaHostAlloc) X(cudaFreeHost)                \
    X(cudaStreamCreateWithFlags) X(cudaStreamDestroy) X(cudaStreamSynchronize)                     \
    X(cudaLaunchHostFunc) X(cudaGetErrorName) X(cudaGetErrorString)

struct Cudart {
#define UHMM_CUDART_POINTER(name) decltype(&::name) name = nullptr;
    UHMM_CUDART_FUNCTIONS(UHMM_CUDART_POINTER)
#undef UHMM_CUDART_POINTER
};

// The loaded runtime, or nullptr when it cannot be loaded (`*why` then says
// which library and dlerror's text). Loads once; thread-safe.
const Cudart* cudart(std::string* why = nullptr) noexcept;

}  // namespace uhmm::base
