// safetensors: u64 little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
// then the data section; offsets are relative to its start.
#include "weights.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

#include "../src/errors.hpp"
#include "../src/json.hpp"

namespace slmc {
namespace {

namespace ffi = tvm::ffi;

// safetensors dtype code -> DLPack dtype.
const std::map<std::string, DLDataType>& dtypes() {
    static const std::map<std::string, DLDataType> table = {
        {"F64", {kDLFloat, 64, 1}}, {"F32", {kDLFloat, 32, 1}}, {"F16", {kDLFloat, 16, 1}}, {"BF16", {kDLBfloat, 16, 1}},
        {"I64", {kDLInt, 64, 1}},   {"I32", {kDLInt, 32, 1}},   {"I16", {kDLInt, 16, 1}},   {"I8", {kDLInt, 8, 1}},
        {"U64", {kDLUInt, 64, 1}},  {"U32", {kDLUInt, 32, 1}},  {"U16", {kDLUInt, 16, 1}},  {"U8", {kDLUInt, 8, 1}},
        {"BOOL", {kDLBool, 8, 1}}};
    return table;
}

// A tensor whose data is a view of the mapping; the mapping lives as long as any such tensor.
struct MappingView {
    std::shared_ptr<const MappedFile> keep;
    const uint8_t* ptr;
    void AllocData(DLTensor* t) { t->data = const_cast<uint8_t*>(ptr); }  // read-only mapping: TVM only reads weights
    void FreeData(DLTensor*) {}
};

// 64-byte aligned heap memory holding a copy (unaligned files only).
struct AlignedCopy {
    const uint8_t* src;
    size_t size;
    void AllocData(DLTensor* t) {
        size_t rounded = (size + kTvmAlignment - 1) / kTvmAlignment * kTvmAlignment;
        t->data = std::aligned_alloc(kTvmAlignment, rounded ? rounded : kTvmAlignment);
        if (!t->data) throw std::bad_alloc();
        if (size) std::memcpy(t->data, src, size);
    }
    void FreeData(DLTensor* t) { std::free(t->data); }
};

uint64_t read_u64_le(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

}  // namespace

MappedWeights map_weights(const std::shared_ptr<const MappedFile>& file, const std::vector<std::string>& order) {
    const std::string& path = file->path();
    if (file->size() < 8) throw FormatError(path + ": too short for a safetensors file");
    uint64_t header_len = read_u64_le(file->data());
    if (header_len > file->size() - 8) throw FormatError(path + ": safetensors header length " + std::to_string(header_len) + " exceeds the file");
    Json header = parse_json(std::string(reinterpret_cast<const char*>(file->data()) + 8, header_len), path);
    if (header.kind != Json::Kind::Object) throw FormatError(path + ": safetensors header is not a JSON object");
    const uint8_t* data = file->data() + 8 + header_len;
    size_t data_size = file->size() - 8 - header_len;
    MappedWeights out;
    DLDevice cpu{kDLCPU, 0};
    for (const std::string& name : order) {
        const Json* entry = header.get(name);
        std::string where = path + ": tensor '" + name + "'";
        if (!entry || entry->kind != Json::Kind::Object) throw FormatError(where + " (named in the manifest's weights.order) is missing");
        const Json* dtype = entry->get("dtype");
        const Json* shape = entry->get("shape");
        const Json* offsets = entry->get("data_offsets");
        if (!dtype || dtype->kind != Json::Kind::String || !dtypes().count(dtype->text))
            throw FormatError(where + ": field 'dtype' missing or not one of F64/F32/F16/BF16/I64/I32/I16/I8/U64/U32/U16/U8/BOOL");
        if (!shape || shape->kind != Json::Kind::Array) throw FormatError(where + ": field 'shape' must be an array");
        if (!offsets || offsets->kind != Json::Kind::Array || offsets->items.size() != 2)
            throw FormatError(where + ": field 'data_offsets' must be [begin, end]");
        std::vector<int64_t> dims;
        for (const Json& d : shape->items) {
            if (d.kind != Json::Kind::Number || d.number < 0 || std::floor(d.number) != d.number)
                throw FormatError(where + ": shape entries must be non-negative integers");
            dims.push_back(static_cast<int64_t>(d.number));
        }
        double begin = offsets->items[0].number, end = offsets->items[1].number;
        DLDataType dt = dtypes().at(dtype->text);
        size_t numel = 1;
        for (int64_t d : dims) numel *= static_cast<size_t>(d);
        size_t nbytes = ffi::GetDataSize(numel, dt);
        if (begin < 0 || end < begin || end > static_cast<double>(data_size) || static_cast<size_t>(end - begin) != nbytes)
            throw FormatError(where + ": data_offsets [" + std::to_string(static_cast<int64_t>(begin)) + ", " +
                              std::to_string(static_cast<int64_t>(end)) + ") do not hold its " + std::to_string(nbytes) +
                              " bytes inside the data section");
        const uint8_t* ptr = data + static_cast<size_t>(begin);
        ffi::ShapeView view(dims.data(), dims.size());
        if (reinterpret_cast<uintptr_t>(ptr) % kTvmAlignment == 0) {
            out.tensors.push_back(ffi::Tensor::FromNDAlloc(MappingView{file, ptr}, view, dt, cpu));
        } else {
            out.tensors.push_back(ffi::Tensor::FromNDAlloc(AlignedCopy{ptr, nbytes}, view, dt, cpu));
            ++out.copied;
        }
    }
    return out;
}

}  // namespace slmc
