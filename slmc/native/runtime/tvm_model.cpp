// The Relax VM through tvm-ffi (TVM 0.27): Module::LoadFromFile, the module's vm_load_executable
// and vm_initialization functions, and `main` called with packed arguments.
#include "tvm_model.hpp"

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/error.h>

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../src/errors.hpp"

namespace slmc {
namespace ffi = tvm::ffi;

namespace {

constexpr int kPooledAllocator = 2;  // relax.VirtualMachine.POOLED_ALLOCATOR, the Python default
constexpr size_t kAlignment = 64;

struct ZeroedHost {
    void AllocData(DLTensor* t) {
        size_t size = ffi::GetDataSize(*t);
        size_t rounded = (size + kAlignment - 1) / kAlignment * kAlignment;
        t->data = std::aligned_alloc(kAlignment, rounded ? rounded : kAlignment);
        if (!t->data) throw std::bad_alloc();
        std::memset(t->data, 0, rounded ? rounded : kAlignment);
    }
    void FreeData(DLTensor* t) { std::free(t->data); }
};

ffi::Function require(const ffi::Module& mod, const std::string& name, const std::string& path) {
    ffi::Optional<ffi::Function> f = mod->GetFunction(name);
    if (!f.has_value()) throw ModelError(path + ": the module has no function '" + name + "' (not a Relax VM executable?)");
    return f.value();
}

std::string describe(const ffi::Error& e) { return e.kind() + ": " + e.message(); }

// The model's code: `library_path` (model.so) opened by the dynamic loader, or -- in the static
// runner (SLMC_SYSTEM_LIB, slmc/native/static_build.py) -- the system library its objects registered
// into this executable at start-up ("ffi.SystemLib"; TVM's system-lib build), the path unused.
ffi::Module load_library(const std::string& library_path) {
#ifdef SLMC_SYSTEM_LIB
    (void)library_path;
    return ffi::Function::GetGlobalRequired("ffi.SystemLib")().cast<ffi::Module>();
#else
    return ffi::Module::LoadFromFile(library_path);
#endif
}

}  // namespace

ffi::Tensor host_tensor(const std::vector<int64_t>& shape, DLDataType dtype) {
    return ffi::Tensor::FromNDAlloc(ZeroedHost{}, ffi::ShapeView(shape.data(), shape.size()), dtype, DLDevice{kDLCPU, 0});
}

namespace {

// The CPUs of a Linux CPU list such as "0-1,4".
std::set<int> cpu_set(const std::string& list) {
    std::set<int> cpus;
    std::stringstream parts(list);
    for (std::string part; std::getline(parts, part, ',');) {
        if (part.empty()) continue;
        size_t dash = part.find('-');
        int first = std::stoi(part.substr(0, dash));
        int last = dash == std::string::npos ? first : std::stoi(part.substr(dash + 1));
        for (int cpu = first; cpu <= last; ++cpu) cpus.insert(cpu);
    }
    return cpus;
}

// The physical cores among the CPUs this process may run on: CPUs with the same thread_siblings_list (SMT threads
// of one core) count once, a CPU without one as a core of its own. Counted per CPU, not as usable / cpu0's
// siblings: `taskset -c 0,1` on a 2-way SMT machine numbering siblings n and n + cores is two cores, not one
// (as slmc.artifact.tvm_runtime.physical_cores).
int physical_cores() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> usable;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
            if (CPU_ISSET(cpu, &set)) usable.push_back(cpu);
    } else {
        for (int cpu = 0; cpu < static_cast<int>(std::thread::hardware_concurrency()); ++cpu) usable.push_back(cpu);
    }
    std::set<std::set<int>> cores;
    for (int cpu : usable) {
        std::ifstream siblings("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
        std::string list;
        cores.insert(siblings >> list ? cpu_set(list) : std::set<int>{cpu});
    }
    return std::max(static_cast<int>(cores.size()), 1);
}

// TVM's thread pool takes TVM_NUM_THREADS, else OMP_NUM_THREADS, else hardware_concurrency() / 2 on x86
// (it assumes two hyper-threads per core: half the cores where there is no SMT). Unless the user chose,
// one thread per physical core, as the Python runtime (slmc.artifact.tvm_runtime.use_physical_cores).
// Read when the pool starts, at the first parallel kernel.
void use_physical_cores() {
    if (std::getenv("TVM_NUM_THREADS") != nullptr || std::getenv("OMP_NUM_THREADS") != nullptr) return;
    setenv("TVM_NUM_THREADS", std::to_string(physical_cores()).c_str(), 0);
}

}  // namespace

TvmModel::TvmModel(const std::string& library_path, std::vector<ffi::Tensor> weights, bool resident, bool last_position)
    : path_(library_path), weights_(std::move(weights)) {
    use_physical_cores();
    try {
        library_ = load_library(library_path);
        vm_ = require(*library_, "vm_load_executable", path_)().cast<ffi::Module>();
        require(*vm_, "vm_initialization", path_)(static_cast<int>(kDLCPU), 0, kPooledAllocator);
        main_ = require(*vm_, "main", path_);
        if (resident) resident_all_ = require(*vm_, "resident_all", path_);
        if (resident && last_position) resident_last_ = require(*vm_, "resident_last", path_);
        // resident_step: built only on request (slmc.backend.lowering.build one_token_step), as the Python runtime finds it
        if (resident && last_position) {
            ffi::Optional<ffi::Function> step = (*vm_)->GetFunction("resident_step");
            if (step.has_value()) resident_step_ = step.value();
        }
    } catch (const ffi::Error& e) {
        throw ModelError(path_ + ": TVM could not load the model: " + describe(e));
    }
}

StepOutputs TvmModel::step(const ffi::Tensor& ids, const ffi::Tensor& keys, const ffi::Tensor& values) const {
    std::vector<ffi::AnyView> args;
    args.reserve(3 + weights_.size());
    args.emplace_back(ids);
    args.emplace_back(keys);
    args.emplace_back(values);
    for (const ffi::Tensor& w : weights_) args.emplace_back(w);
    ffi::Any result;
    try {
        main_.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
        auto outs = result.cast<ffi::Array<ffi::Any>>();
        if (outs.size() != 3) throw ModelError(path_ + ": main returned " + std::to_string(outs.size()) + " outputs; the KV-cache contract has 3 (logits, keys, values)");
        return {outs[0].cast<ffi::Tensor>(), outs[1].cast<ffi::Tensor>(), outs[2].cast<ffi::Tensor>()};
    } catch (const ffi::Error& e) {
        throw ModelError(path_ + ": running main failed: " + describe(e));
    }
}

ffi::Tensor TvmModel::step_resident(const ffi::Tensor& ids, const ffi::Tensor& keys, const ffi::Tensor& values,
                                    const std::vector<ffi::Tensor>& scales, int64_t past, bool last_only) const {
    if (!resident_all_.has_value()) throw ModelError(path_ + ": the library has no resident_all (the manifest's kv_cache.mode is copy)");
    const ffi::Function& function = resident_function(ids.size(1), last_only);
    ffi::Shape slots({past});
    std::vector<ffi::AnyView> args;
    args.reserve(4 + scales.size() + weights_.size());
    args.emplace_back(ids);
    args.emplace_back(keys);
    args.emplace_back(values);
    for (const ffi::Tensor& s : scales) args.emplace_back(s);
    args.emplace_back(slots);
    for (const ffi::Tensor& w : weights_) args.emplace_back(w);
    ffi::Any result;
    try {
        function.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
        return result.cast<ffi::Tensor>();
    } catch (const ffi::Error& e) {
        throw ModelError(path_ + ": running the resident step failed: " + describe(e));
    }
}

const ffi::Function& TvmModel::resident_function(int64_t tokens, bool last_only) const {
    if (tokens == 1 && resident_step_.has_value()) return *resident_step_;  // one token: its last logits are all its logits
    return last_only && resident_last_.has_value() ? *resident_last_ : *resident_all_;
}

}  // namespace slmc
