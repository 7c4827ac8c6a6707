// model.so run by TVM's C++ runtime: the Relax VM on the CPU, as Python's relax.VirtualMachine
// builds it (vm_load_executable, then vm_initialization with the pooled allocator).
#pragma once

#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <optional>
#include <string>
#include <vector>

namespace slmc {

struct StepOutputs {
    tvm::ffi::Tensor logits;  // float32 [1, T, V]
    tvm::ffi::Tensor keys;    // float32 [L, 1, H, P + T, D]
    tvm::ffi::Tensor values;
};

class TvmModel {
  public:
    // Loads `library_path` (model.so); `weights` follow the three inputs of `main` in every call.
    // Throws ModelError with TVM's message.
    TvmModel(const std::string& library_path, std::vector<tvm::ffi::Tensor> weights);

    // One call of `main(input_ids, past_keys, past_values, *weights)` (the KV-cache contract).
    StepOutputs step(const tvm::ffi::Tensor& ids, const tvm::ffi::Tensor& keys, const tvm::ffi::Tensor& values) const;

  private:
    std::string path_;
    std::optional<tvm::ffi::Module> library_;  // keeps model.so loaded
    std::optional<tvm::ffi::Module> vm_;
    tvm::ffi::Function main_;
    std::vector<tvm::ffi::Tensor> weights_;
};

// A zero-filled, 64-byte aligned CPU tensor owned by TVM's reference counting.
tvm::ffi::Tensor host_tensor(const std::vector<int64_t>& shape, DLDataType dtype);

}  // namespace slmc
