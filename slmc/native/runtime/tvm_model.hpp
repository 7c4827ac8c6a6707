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
    // `resident` / `last_position`: the manifest's kv_cache says the library has resident_all / resident_last.
    TvmModel(const std::string& library_path, std::vector<tvm::ffi::Tensor> weights, bool resident = false,
             bool last_position = false);

    // One call of `main(input_ids, past_keys, past_values, *weights)` (the KV-cache contract).
    StepOutputs step(const tvm::ffi::Tensor& ids, const tvm::ffi::Tensor& keys, const tvm::ffi::Tensor& values) const;

    // One call of `resident_all` (`resident_last` when `last_only` and the library has it; `resident_step`
    // for one token when the library has it, slmc.schedules.one_token: the same logits) under the
    // resident contract: writes the new keys/values at slots past .. past + T - 1 of `keys`/`values`
    // [L, 1, H, max_context + 1, D] in place and returns the logits [1, T, V] ([1, 1, V]). `scales`: an int8
    // cache's key and value scales [L, 1, H, max_context + 1], passed after the caches (empty for float32).
    tvm::ffi::Tensor step_resident(const tvm::ffi::Tensor& ids, const tvm::ffi::Tensor& keys, const tvm::ffi::Tensor& values,
                                   const std::vector<tvm::ffi::Tensor>& scales, int64_t past, bool last_only) const;
    bool resident() const { return resident_all_.has_value(); }

  private:
    std::string path_;
    std::optional<tvm::ffi::Module> library_;  // keeps model.so loaded
    std::optional<tvm::ffi::Module> vm_;
    tvm::ffi::Function main_;
    std::optional<tvm::ffi::Function> resident_all_, resident_last_, resident_step_;

    const tvm::ffi::Function& resident_function(int64_t tokens, bool last_only) const;
    std::vector<tvm::ffi::Tensor> weights_;
};

// A zero-filled, 64-byte aligned CPU tensor owned by TVM's reference counting.
tvm::ffi::Tensor host_tensor(const std::vector<int64_t>& shape, DLDataType dtype);

}  // namespace slmc
