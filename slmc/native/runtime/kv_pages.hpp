// The page size of the resident KV cache, chosen for the context a generation will use.
//
// The cache [L, 1, H_kv, max_context + 1, D] is one row of max_context + 1 slots per (layer, head), and a
// generation writes the first slots of every row. Transparent huge pages make the decode step's reads of
// the cache cheaper (fewer TLB misses: 6-25% at context 2,000, docs/dev-notes.md session 8), but a 2 MB
// page becomes resident as a whole on its first write, and a row of a small model is shorter than
// that (SmolLM-135M: 2,049 x 64 floats = 524 KB): with huge pages the first prefill makes the whole cache
// resident, whatever the context. So the runner asks for huge pages only when the pages they make
// resident are about the cache at the context used (kHugePageWaste), else keeps 4 KB pages, whose
// resident memory follows the slots written. llama.cpp sizes its cache to n_ctx; here the compiled
// functions take the cache at the manifest's max_context (a static shape), so the page size is the knob.
#pragma once

#include <tvm/ffi/container/tensor.h>

#include <cstdint>

namespace slmc {

// Bytes of a transparent huge page (PMD size with 4 KB base pages: x86-64 and arm64).
constexpr uint64_t kHugePageBytes = 2ull << 20;
// Huge pages are asked for when the bytes they would make resident exceed the cache at the context used
// by at most this fraction of it (1/16: about the decode-time gain they buy at long contexts).
constexpr double kHugePageWaste = 1.0 / 16;

// Bytes resident with huge pages when every row of `cache` (a resident cache or its scales, slots on axis
// 3, mapped at its data address) has its first `slots` slots written: the distinct 2 MB pages touched.
uint64_t huge_page_resident_bytes(const tvm::ffi::Tensor& cache, int64_t slots);
// Bytes of the first `slots` slots of every row (what 4 KB pages make resident, to a page per row).
uint64_t used_bytes(const tvm::ffi::Tensor& cache, int64_t slots);
// Asks for huge pages (MADV_HUGEPAGE) on `cache`'s mapping (zero_page_tensor) when, with `slots` slots
// per row in use, they make at most kHugePageWaste more resident than the slots used. Returns whether it
// asked. Advice only: pages already written keep their size, and where THP is off nothing changes.
bool advise_huge_pages_for(const tvm::ffi::Tensor& cache, int64_t slots);

}  // namespace slmc
