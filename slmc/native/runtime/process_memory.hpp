// This process's resident memory by kind, from /proc/self/smaps (Linux and Android): where the
// bytes of `slmc-run --json`'s peak RSS go (issue 18's bound: weights file + KV cache + 40 MB).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace slmc {

struct ResidentMemory {
    bool available = false;       // false: /proc/self/smaps could not be read (every count is 0)
    uint64_t weights = 0;         // pages of the weights file's mapping
    uint64_t kv_cache = 0;        // pages of the mappings holding the KV cache
    uint64_t model_library = 0;   // model.so (code and data)
    uint64_t tvm_libraries = 0;   // libtvm_runtime, libtvm_ffi
    uint64_t other_files = 0;     // every other file mapping: the executable, libslmc_runtime, libc, libstdc++, ...
    uint64_t anonymous = 0;       // heap and other anonymous memory: tokenizer tables, TVM's pools, logits, stacks
    uint64_t total = 0;           // the sum (VmRSS)
    uint64_t peak = 0;            // VmHWM of /proc/self/status: the most this process held at once
};

// Sums the Rss of each mapping by kind: a mapping whose file name ends with `weights_file_name` is the
// weights, one containing an address of `kv_cache_data` is the KV cache, a file named `model.so` the model.
ResidentMemory resident_memory(const std::string& weights_file_name, const std::vector<const void*>& kv_cache_data);

}  // namespace slmc
