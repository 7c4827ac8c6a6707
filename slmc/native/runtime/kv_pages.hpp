// The page size of the resident KV cache, chosen for the context a generation will use.
//
// The cache [L, 1, H_kv, max_context + 1, D] is one row of max_context + 1 slots per (layer, head), and a
// generation writes the first slots of every row. Transparent huge pages make the decode step's reads of
// the cache cheaper (fewer TLB misses: 6-25% at context 2,000, docs/dev-notes.md session 8), but a 2 MB
// page becomes resident as a whole on its first write, and a row of a small model is shorter than
// that (SmolLM-135M at the bench's max_context 2,008: 2,009 x 64 floats = 514 KB): with huge pages the
// first prefill makes the whole cache resident, whatever the context. So the runner asks for huge pages only when the pages they make
// resident are about the cache at the context used (kHugePageWaste), else keeps 4 KB pages, whose
// resident memory follows the slots written. llama.cpp sizes its cache to n_ctx; here the compiled
// functions take the cache at the manifest's max_context (a static shape), so the page size is the knob.
#pragma once

#include <tvm/ffi/container/tensor.h>

#include <cstdint>
#include <vector>

namespace slmc {

// Bytes of a transparent huge page (PMD size with 4 KB base pages: x86-64 and arm64).
constexpr uint64_t kHugePageBytes = 2ull << 20;
// Huge pages are asked for when the bytes they would make resident exceed the cache at the context used
// by at most this fraction of it. 1/64: the bound's 40 MB allowance is nearly all the runner's own memory
// (SmolLM-135M at context 2,006: 39.6 MB of libraries, TVM's prefill workspace and heap), so huge pages
// may cost little more than page rounding (1.4 MB there).
constexpr double kHugePageWaste = 1.0 / 64;

// A zero-filled CPU tensor of its own anonymous mapping, starting on a 2 MB boundary (so that huge pages can
// serve it from its first byte), whose pages become resident only when written: the resident KV cache of
// max_context + 1 slots costs memory for the slots in use. Its pages are 4 KB (MADV_NOHUGEPAGE, also where
// THP is "always") until advise_huge_pages_for asks for huge pages for the context used.
tvm::ffi::Tensor zero_page_tensor(const std::vector<int64_t>& shape, DLDataType dtype);

// Bytes resident with huge pages when every row of `cache` (a resident cache or its scales, slots on axis
// 3, mapped at its data address) has its first `slots` slots written: the distinct 2 MB pages touched among
// those wholly inside the tensor's bytes, plus the written bytes outside them (4 KB pages: the kernel maps a
// huge page only where the whole 2 MB belong to the mapping).
uint64_t huge_page_resident_bytes(const tvm::ffi::Tensor& cache, int64_t slots);
// Bytes of the first `slots` slots of every row (what 4 KB pages make resident, to a page per row).
uint64_t used_bytes(const tvm::ffi::Tensor& cache, int64_t slots);
// Asks for huge pages (MADV_HUGEPAGE) on `cache`'s mapping (zero_page_tensor) when, with `slots` slots
// per row in use, they make at most kHugePageWaste more resident than the slots used. Returns whether it
// asked. Advice only: pages already written keep their size, and where THP is off nothing changes.
bool advise_huge_pages_for(const tvm::ffi::Tensor& cache, int64_t slots);

}  // namespace slmc
