// The page-size choice of kv_pages.hpp: count the 2 MB pages the written slots touch, compare with the
// slots' bytes, madvise.
#include "kv_pages.hpp"

#include <sys/mman.h>

#include <algorithm>

namespace slmc {
namespace ffi = tvm::ffi;

namespace {

struct Rows {
    uint64_t count = 1;      // (layer, batch, head) rows
    uint64_t slot_bytes = 0; // bytes of one slot of a row (D numbers, or one scale)
    uint64_t row_bytes = 0;  // bytes of a row (max_context + 1 slots)
};

Rows rows_of(const ffi::Tensor& cache) {
    const DLTensor* t = cache.GetDLTensorPtr();
    Rows r;
    for (int i = 0; i < 3; ++i) r.count *= static_cast<uint64_t>(t->shape[i]);
    r.slot_bytes = (static_cast<uint64_t>(t->dtype.bits) * t->dtype.lanes + 7) / 8;
    for (int i = 4; i < t->ndim; ++i) r.slot_bytes *= static_cast<uint64_t>(t->shape[i]);
    r.row_bytes = r.slot_bytes * static_cast<uint64_t>(t->shape[3]);
    return r;
}

uint64_t clamp_slots(const ffi::Tensor& cache, int64_t slots) {
    return static_cast<uint64_t>(std::clamp<int64_t>(slots, 0, cache.size(3)));
}

}  // namespace

uint64_t used_bytes(const ffi::Tensor& cache, int64_t slots) {
    Rows r = rows_of(cache);
    return r.count * r.slot_bytes * clamp_slots(cache, slots);
}

uint64_t huge_page_resident_bytes(const ffi::Tensor& cache, int64_t slots) {
    Rows r = rows_of(cache);
    uint64_t written = r.slot_bytes * clamp_slots(cache, slots);
    if (written == 0) return 0;
    uint64_t base = reinterpret_cast<uintptr_t>(cache.data_ptr());
    uint64_t pages = 0, last = UINT64_MAX;  // rows ascend, so a page shared with the previous row is `last`
    for (uint64_t i = 0; i < r.count; ++i) {
        uint64_t first_page = (base + i * r.row_bytes) / kHugePageBytes;
        uint64_t end_page = (base + i * r.row_bytes + written - 1) / kHugePageBytes;
        pages += end_page - first_page + 1 - (first_page == last ? 1 : 0);
        last = end_page;
    }
    return pages * kHugePageBytes;
}

bool advise_huge_pages_for(const ffi::Tensor& cache, int64_t slots) {
    double used = static_cast<double>(used_bytes(cache, slots));
    if (used == 0 || static_cast<double>(huge_page_resident_bytes(cache, slots)) > used * (1 + kHugePageWaste)) return false;
#ifdef MADV_HUGEPAGE
    const DLTensor* t = cache.GetDLTensorPtr();
    ::madvise(t->data, ffi::GetDataSize(*t), MADV_HUGEPAGE);  // advice only: where THP is off, 4 KB pages serve
#endif
    return true;
}

}  // namespace slmc
