// Opening an artifact (integrity first, then tokenizer, weights, model.so) and the generation loop
// of the KV-cache contract: a prefill call with the cache so far, then one call per new token. An
// artifact of the resident contract (manifest kv_cache.mode) keeps one cache of max_context + 1
// slots that resident_all / resident_last append to in place; else main returns a new cache per call.
#include "session.hpp"

#include <malloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <stdexcept>

#include "../src/errors.hpp"
#include "kv_pages.hpp"
#include "sha256.hpp"
#include "weights.hpp"

namespace slmc {
namespace ffi = tvm::ffi;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Tokens per call of a long prompt under the resident contract, as the Python runtime
// (slmc.artifact.resident_cache.PREFILL_CHUNK, which says why 256 and not llama.cpp's 512): TVM's pooled
// allocator keeps the pages of the largest call's intermediates for the life of the process, so the chunk,
// not the prompt, bounds them.
constexpr size_t kPrefillChunk = 256;

const std::string kLibrary = "model.so";
const std::string kWeights = "weights.safetensors";

const FileEntry& listed(const Manifest& m, const std::string& name) {
    auto it = m.files.find(name);
    if (it == m.files.end()) throw FormatError(m.path + ": field 'files' does not list '" + name + "'");
    return it->second;
}

// Every listed file exists with the listed size.
void check_sizes(const std::string& dir, const Manifest& m) {
    for (const auto& [name, entry] : m.files) {
        std::string path = dir + "/" + name;
        struct stat st;
        if (::stat(path.c_str(), &st) != 0) throw IntegrityError(path + ": missing (listed in " + m.path + ")");
        if (static_cast<uint64_t>(st.st_size) != entry.size)
            throw IntegrityError(path + ": size " + std::to_string(st.st_size) + " bytes, the manifest says " +
                                 std::to_string(entry.size) + "; refusing to load a damaged artifact");
    }
}

// Hashed as read (sha256_file), not through a mapping: checking a file leaves none of its pages resident.
void check_hash(const std::string& path, const FileEntry& entry) {
    if (sha256_file(path) != entry.sha256)
        throw IntegrityError(path + ": sha256 differs from the manifest (the file is corrupted or was modified); "
                             "refusing to load it");
}

// Gives the heap pages freed after reading tokenizer.json (its JSON tree is several times the file) back
// to the system, so that they do not add to the weights' pages at the process's peak (glibc keeps freed
// small blocks; musl returns them itself).
void release_freed_heap() {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

}  // namespace

Session::Session(const std::string& artifact_dir) : dir_(artifact_dir) {
    struct stat st;
    if (::stat(dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw IoError(dir_ + ": no such artifact directory");
    if (::stat((dir_ + "/manifest.json").c_str(), &st) != 0)
        throw IoError(dir_ + " is not an slmc artifact: manifest.json is missing");
    manifest_ = read_manifest(dir_);
    token_ = host_tensor({1, 1}, DLDataType{kDLInt, 64, 1});  // a decode step's id, reused
    check_sizes(dir_, manifest_);
    // The tokenizer first: its parse is the load's largest heap use, freed before the weights are touched.
    check_hash(dir_ + "/" + manifest_.tokenizer_file, listed(manifest_, manifest_.tokenizer_file));
    tokenizer_ = std::make_unique<slmc_tokenizer>(dir_ + "/" + manifest_.tokenizer_file);
    release_freed_heap();
    check_hash(dir_ + "/" + kWeights, listed(manifest_, kWeights));
#ifndef SLMC_SYSTEM_LIB  // the static runner carries the model's code itself (bundle.json hashes it)
    check_hash(dir_ + "/" + kLibrary, listed(manifest_, kLibrary));
#endif
    auto weights_file = std::make_shared<const MappedFile>(dir_ + "/" + kWeights);
    weights_bytes_ = weights_file->size();
    if (!manifest_.eos_token.empty()) {
        eos_id_ = tokenizer_->impl.token_to_id(manifest_.eos_token);
        if (eos_id_ < 0)
            throw FormatError(manifest_.path + ": field 'tokenizer.eos_token': \"" + manifest_.eos_token +
                              "\" is not a token of " + manifest_.tokenizer_file);
    }
    MappedWeights weights = map_weights(weights_file, manifest_.weight_stored);
    copied_weights_ = weights.copied;
    const KVCacheShape& c = manifest_.kv_cache;
    model_ = std::make_unique<TvmModel>(dir_ + "/" + kLibrary, std::move(weights.tensors), c.resident, c.last_position);
    if (c.resident) {  // zeros: the sink slot is read with probability 0, and 0 x NaN would poison the scores.
        // Zero pages on demand: resident memory grows with the slots written, not with max_context; the page
        // size is chosen per generation for the context it will use (plan_pages, kv_pages.hpp).
        DLDataType stored = c.int8 ? DLDataType{kDLInt, 8, 1} : DLDataType{kDLFloat, uint8_t(c.float16 ? 16 : 32), 1};
        keys_ = zero_page_tensor({c.layers, 1, c.kv_heads, c.max_context + 1, c.head_dim}, stored);
        values_ = zero_page_tensor({c.layers, 1, c.kv_heads, c.max_context + 1, c.head_dim}, stored);
        if (c.int8)  // one scale per (layer, head, slot)
            for (int i = 0; i < 2; ++i)
                scales_.push_back(zero_page_tensor({c.layers, 1, c.kv_heads, c.max_context + 1}, DLDataType{kDLFloat, 32, 1}));
    }
    reset();
}

void Session::reset() {
    const KVCacheShape& c = manifest_.kv_cache;
    if (c.resident) {
        slots_ = 1;  // the slots past the sink are written before they are read again
    } else {
        keys_ = host_tensor({c.layers, 1, c.kv_heads, 1, c.head_dim}, DLDataType{kDLFloat, 32, 1});
        values_ = host_tensor({c.layers, 1, c.kv_heads, 1, c.head_dim}, DLDataType{kDLFloat, 32, 1});
    }
    context_.clear();
    has_pending_ = false;
}

MemoryUse Session::memory() const {
    const KVCacheShape& c = manifest_.kv_cache;
    // int8: one byte per number and a float32 scale per row of head_dim numbers; float16: two bytes per number
    uint64_t row = c.int8 ? uint64_t(c.head_dim) + sizeof(float) : uint64_t(c.head_dim) * (c.float16 ? 2 : sizeof(float));
    uint64_t per_slot = 2ull * uint64_t(c.layers) * uint64_t(c.kv_heads) * row;
    MemoryUse m;
    m.weights_file_bytes = weights_bytes_;
    m.kv_cache_bytes = per_slot * uint64_t(cached() + 1);  // the sink slot included
    m.kv_cache_reserved_bytes = c.resident ? per_slot * uint64_t(c.max_context + 1) : m.kv_cache_bytes;
    m.kv_cache_huge_pages = huge_pages_;
    m.kv_cache_data = {keys_.defined() ? keys_.data_ptr() : nullptr, values_.defined() ? values_.data_ptr() : nullptr};
    return m;
}

void Session::plan_pages(int64_t slots) {
    if (!manifest_.kv_cache.resident || huge_pages_) return;  // advice is never taken back: written pages keep their size
    // each mapping on its own: keys and values (one shape, both on 2 MB) get the same answer; the int8
    // cache's scales, of another shape, their own. Asking again is harmless
    bool keys = advise_huge_pages_for(keys_, slots), values = advise_huge_pages_for(values_, slots);
    for (const ffi::Tensor& s : scales_) advise_huge_pages_for(s, slots);
    huge_pages_ = keys && values;
}

int64_t Session::cached() const { return manifest_.kv_cache.resident ? slots_ - 1 : keys_.size(3) - 1; }

ffi::Tensor Session::run(const std::vector<int32_t>& ids, bool last_only) {
    if (manifest_.kv_cache.resident && last_only) {  // a long prompt in chunks (kPrefillChunk)
        ffi::Tensor logits;
        for (size_t start = 0; start < ids.size(); start += kPrefillChunk)
            logits = run_call(ids.data() + start, std::min(kPrefillChunk, ids.size() - start), true);
        return logits;
    }
    return run_call(ids.data(), ids.size(), last_only);
}

ffi::Tensor Session::run_call(const int32_t* ids, size_t count, bool last_only) {
    ffi::Tensor input = count == 1 ? token_ : host_tensor({1, static_cast<int64_t>(count)}, DLDataType{kDLInt, 64, 1});
    auto* data = static_cast<int64_t*>(input.data_ptr());
    for (size_t i = 0; i < count; ++i) data[i] = ids[i];
    if (manifest_.kv_cache.resident) {
        ffi::Tensor logits = model_->step_resident(input, keys_, values_, scales_, slots_, last_only);
        slots_ += static_cast<int64_t>(count);
        return logits;
    }
    StepOutputs out = model_->step(input, keys_, values_);
    keys_ = out.keys;
    values_ = out.values;
    return out.logits;
}

const float* Session::last_logits(const ffi::Tensor& logits) const {
    const DLTensor* t = logits.GetDLTensorPtr();
    if (t->ndim != 3 || t->dtype.code != kDLFloat || t->dtype.bits != 32 || t->shape[2] != manifest_.vocab || !logits.IsContiguous())
        throw ModelError(dir_ + "/" + kLibrary + ": main's logits are not a contiguous float32 [1, T, " +
                         std::to_string(manifest_.vocab) + "] tensor as the manifest's signature says");
    const auto* base = reinterpret_cast<const float*>(static_cast<const char*>(t->data) + t->byte_offset);
    return base + (t->shape[1] - 1) * t->shape[2];
}

GenerationStats Session::generate(const std::string& prompt, const Sampling& sampling, uint64_t seed, int32_t max_new_tokens,
                                  const TokenSink& sink) {
    Clock::time_point start = Clock::now();
    std::vector<int32_t> prompt_ids = tokenizer_->impl.encode(prompt.data(), prompt.size(), /*add_special_tokens=*/false);
    if (prompt_ids.empty()) throw std::invalid_argument("the prompt encodes to no tokens");
    return generate_ids(prompt_ids, sampling, seed, max_new_tokens, sink, start);
}

GenerationStats Session::generate_ids(const std::vector<int32_t>& prompt_ids, const Sampling& sampling, uint64_t seed,
                                      int32_t max_new_tokens, const TokenSink& sink, Clock::time_point start) {
    check_sampling(sampling);
    if (max_new_tokens < 1) throw std::invalid_argument("max_new_tokens must be >= 1, got " + std::to_string(max_new_tokens));
    if (prompt_ids.empty()) throw std::invalid_argument("the prompt has no tokens");
    GenerationStats stats;
    for (int32_t id : prompt_ids)
        if (id < 0 || id >= manifest_.vocab)
            throw std::invalid_argument("the prompt encodes to token id " + std::to_string(id) + ", outside the model's vocabulary [0, " +
                                        std::to_string(manifest_.vocab) + ")");
    std::vector<int32_t> feed;
    if (has_pending_) feed.push_back(context_.back());
    feed.insert(feed.end(), prompt_ids.begin(), prompt_ids.end());
    int64_t cached = this->cached();
    int64_t max_context = manifest_.kv_cache.max_context;
    if (cached + static_cast<int64_t>(feed.size()) > max_context)
        throw std::invalid_argument(std::to_string(cached) + " cached + " + std::to_string(feed.size()) +
                                    " new tokens exceed the artifact's max_context " + std::to_string(max_context));
    // the slots this call can fill: the sink, the cache, the feed and every new token but the last (never fed)
    plan_pages(std::min(max_context, cached + static_cast<int64_t>(feed.size()) + max_new_tokens - 1) + 1);
    context_.insert(context_.end(), prompt_ids.begin(), prompt_ids.end());
    stats.prompt_tokens = static_cast<int32_t>(prompt_ids.size());

    Clock::time_point prefill_start = Clock::now();
    ffi::Tensor logits = run(feed, /*last_only=*/true);
    stats.prefill_seconds = seconds_since(prefill_start);
    has_pending_ = false;
    SplitMix64 rng(seed);
    DecodeStream stream(tokenizer_->impl, /*skip_special_tokens=*/true);
    Clock::time_point decode_start = Clock::now();
    while (true) {
        int32_t token = sample_token(last_logits(logits), manifest_.vocab, sampling, context_, rng);
        context_.push_back(token);
        has_pending_ = true;
        ++stats.generated_tokens;
        if (stats.generated_tokens == 1) {
            stats.ttft_seconds = seconds_since(start);
            decode_start = Clock::now();
        }
        bool go_on = sink(token, stream.step(token));
        if (token == eos_id_ && stop_at_eos_) stats.stopped_at_eos = true;
        if (!go_on || stats.stopped_at_eos || stats.generated_tokens >= max_new_tokens) break;
        if (this->cached() + 1 > max_context) {
            stats.stopped_at_context = true;
            break;
        }
        logits = run({token}, /*last_only=*/true);
        has_pending_ = false;
    }
    stats.decode_seconds = seconds_since(decode_start);
    last_ = stats;
    return stats;
}

}  // namespace slmc
