// The weights of weights.safetensors as TVM tensors that view the memory mapping (zero-copy).
#pragma once

#include <tvm/ffi/container/tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "mapped_file.hpp"

namespace slmc {

constexpr size_t kTvmAlignment = 64;  // TVM's kAllocAlignment (tvm/runtime/device_api.h)

struct MappedWeights {
    std::vector<tvm::ffi::Tensor> tensors;  // in the requested order
    size_t copied = 0;                      // tensors copied because their data was not 64-byte aligned
};

// Parses the safetensors header of `file` and returns the tensors named in `order`. Each tensor
// views the mapping when its data is 64-byte aligned (files slmc writes since the native runtime:
// slmc/artifact/aligned_safetensors.py); an older, unaligned file's tensors are copied into aligned
// memory instead (counted in `copied`). Throws FormatError naming the file and tensor.
MappedWeights map_weights(const std::shared_ptr<const MappedFile>& file, const std::vector<std::string>& order);

}  // namespace slmc
