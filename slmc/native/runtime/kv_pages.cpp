// The resident KV cache's mappings and the page-size choice of kv_pages.hpp: count the 2 MB pages the
// written slots touch, compare with the slots' bytes, madvise.
#include "kv_pages.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <new>

namespace slmc {
namespace ffi = tvm::ffi;

namespace {

constexpr uint64_t kPage = 4096;

uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// Anonymous zero pages (mmap): nothing is touched at allocation, so a page counts in resident memory only
// once it is written (a read of an untouched page maps the kernel's shared zero page). A huge page's worth
// more is mapped and the unaligned head and the tail unmapped again, so that the data starts on 2 MB.
struct ZeroPages {
    size_t bytes = 0;
    void AllocData(DLTensor* t) {
        bytes = round_up(std::max<size_t>(ffi::GetDataSize(*t), 1), kPage);
        size_t mapped = bytes + kHugePageBytes;
        void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        uintptr_t start = reinterpret_cast<uintptr_t>(p), data = round_up(start, kHugePageBytes);
        if (data > start) ::munmap(p, data - start);
        if (start + mapped > data + bytes) ::munmap(reinterpret_cast<void*>(data + bytes), start + mapped - data - bytes);
#ifdef MADV_NOHUGEPAGE
        // 4 KB pages even where THP is "always": advise_huge_pages_for asks for huge ones when they pay
        ::madvise(reinterpret_cast<void*>(data), bytes, MADV_NOHUGEPAGE);
#endif
        t->data = reinterpret_cast<void*>(data);
    }
    void FreeData(DLTensor* t) { ::munmap(t->data, bytes); }
};

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
    uint64_t low = round_up(base, kHugePageBytes);                                               // huge pages: [low, high)
    uint64_t high = (base + ffi::GetDataSize(*cache.GetDLTensorPtr())) / kHugePageBytes * kHugePageBytes;
    uint64_t pages = 0, outside = 0, last = UINT64_MAX;  // rows ascend, so a page shared with the previous row is `last`
    for (uint64_t i = 0; i < r.count; ++i) {
        uint64_t start = base + i * r.row_bytes, end = start + written;
        uint64_t inner_start = std::max(start, low), inner_end = std::min(end, high);
        if (inner_end <= inner_start) {
            outside += written;
            continue;
        }
        outside += written - (inner_end - inner_start);
        uint64_t first_page = inner_start / kHugePageBytes, end_page = (inner_end - 1) / kHugePageBytes;
        pages += end_page - first_page + 1 - (first_page == last ? 1 : 0);
        last = end_page;
    }
    return pages * kHugePageBytes + outside;
}

ffi::Tensor zero_page_tensor(const std::vector<int64_t>& shape, DLDataType dtype) {
    return ffi::Tensor::FromNDAlloc(ZeroPages{}, ffi::ShapeView(shape.data(), shape.size()), dtype, DLDevice{kDLCPU, 0});
}

bool advise_huge_pages_for(const ffi::Tensor& cache, int64_t slots) {
    const DLTensor* t = cache.GetDLTensorPtr();
    if (ffi::GetDataSize(*t) < kHugePageBytes) return false;  // no whole huge page in it (it starts on 2 MB): nothing to ask
    double used = static_cast<double>(used_bytes(cache, slots));
    if (used == 0 || static_cast<double>(huge_page_resident_bytes(cache, slots)) > used * (1 + kHugePageWaste)) return false;
#ifdef MADV_HUGEPAGE
    ::madvise(t->data, ffi::GetDataSize(*t), MADV_HUGEPAGE);  // advice only: where THP is off, 4 KB pages serve
#endif
    return true;
}

}  // namespace slmc
