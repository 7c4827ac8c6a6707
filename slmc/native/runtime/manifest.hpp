// The fields of an artifact's manifest.json the native runtime needs, read by their names
// (format_version 4; see slmc/artifact/layout.py and slmc/graph/kv_cache.py for their meaning).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace slmc {

constexpr int64_t kManifestFormatVersion = 4;

struct FileEntry {
    std::string sha256;
    uint64_t size = 0;
};

struct KVCacheShape {
    int64_t layers = 0, kv_heads = 0, head_dim = 0, max_context = 0;
    bool resident = false;       // kv_cache.mode "resident": model.so has resident_all (slmc/graph/kv_cache.py)
    bool last_position = false;  // kv_cache.last_position: model.so has resident_last
    // kv_cache.dtype "int8" (absent: "float32"): the resident buffers are int8, and resident_all / resident_last take
    // key_scales and value_scales float32 [L, 1, H_kv, max_context + 1] after them (slmc/schedules/resident_kv.py)
    bool int8 = false;
    bool float16 = false;  // kv_cache.dtype "float16": the resident buffers are float16 (no scales)
};

struct Manifest {
    std::string path;                       // of manifest.json, for messages
    std::map<std::string, FileEntry> files;  // relative name -> hash and size
    std::vector<std::string> weight_order;   // weights.order: main's parameters after the inputs
    std::vector<std::string> weight_stored;  // per weight_order entry, the tensor holding it (weights.aliases resolved)
    KVCacheShape kv_cache;
    int64_t vocab = 0;                       // signature.outputs[0].shape[2] (logits [1, T, V])
    std::string tokenizer_kind;              // tokenizer.kind
    std::string tokenizer_file;              // tokenizer.file (relative)
    std::string eos_token;                   // tokenizer.eos_token, "" when absent
};

struct Json;
struct JsonReader;
// The "files" object of manifest.json or bundle.json: name -> {sha256, size}; FormatError naming the field.
std::map<std::string, FileEntry> read_file_entries(const Json& root, const JsonReader& r);

// Reads `<artifact_dir>/manifest.json`. Throws IoError (missing), FormatError naming the field
// (malformed, wrong format_version) or UnsupportedError (not a causal LM with a KV cache, or a
// tokenizer kind other than "huggingface").
Manifest read_manifest(const std::string& artifact_dir);

}  // namespace slmc
