// manifest.json through the project's JSON reader; every missing or mistyped field is named.
#include "manifest.hpp"

#include "../src/errors.hpp"
#include "../src/json.hpp"
#include "../src/read_file.hpp"
#include "json_reader.hpp"

namespace slmc {

std::map<std::string, FileEntry> read_file_entries(const Json& root, const JsonReader& r) {
    std::map<std::string, FileEntry> files;
    for (const auto& [name, entry] : r.object(root, "", "files").fields) {
        if (entry.kind != Json::Kind::Object) r.bad("files." + name, "an object {sha256, size}");
        files[name] = {r.text(r.field(entry, "files." + name, "sha256"), "files." + name + ".sha256"),
                       static_cast<uint64_t>(r.integer(r.field(entry, "files." + name, "size"), "files." + name + ".size"))};
    }
    return files;
}

Manifest read_manifest(const std::string& artifact_dir) {
    Manifest m;
    m.path = artifact_dir + "/manifest.json";
    Json root = parse_json(read_file(m.path), m.path);
    JsonReader r{m.path};
    if (root.kind != Json::Kind::Object) throw FormatError(m.path + ": expected a JSON object");
    int64_t version = r.integer(r.field(root, "", "format_version"), "format_version");
    if (version != kManifestFormatVersion)
        throw FormatError(m.path + ": unsupported manifest format_version " + std::to_string(version) + ", expected " +
                          std::to_string(kManifestFormatVersion));
    m.files = read_file_entries(root, r);
    const Json* cache = root.get("kv_cache");
    if (!cache || cache->is_null())
        throw UnsupportedError(m.path + ": the artifact is not a causal LM with a KV cache (field 'kv_cache' is null or "
                               "absent; task '" + (root.get("task") && root.get("task")->kind == Json::Kind::String ? root.get("task")->text : "?") +
                               "'); the native runtime generates text only");
    if (cache->kind != Json::Kind::Object) r.bad("kv_cache", "an object");
    m.kv_cache = {r.positive(*cache, "kv_cache", "layers"), r.positive(*cache, "kv_cache", "kv_heads"),
                  r.positive(*cache, "kv_cache", "head_dim"), r.positive(*cache, "kv_cache", "max_context")};
    std::string mode = r.text(r.field(*cache, "kv_cache", "mode"), "kv_cache.mode");
    if (mode != "resident" && mode != "copy") r.bad("kv_cache.mode", "\"resident\" or \"copy\"");
    m.kv_cache.resident = mode == "resident";
    m.kv_cache.last_position = r.flag(r.field(*cache, "kv_cache", "last_position"), "kv_cache.last_position");
    const Json* dtype = cache->get("dtype");  // absent in artifacts written before the int8 cache: float32
    std::string stored = dtype ? r.text(*dtype, "kv_cache.dtype") : "float32";
    if (stored != "float32" && stored != "float16" && stored != "int8")
        r.bad("kv_cache.dtype", "\"float32\", \"float16\" or \"int8\"");
    m.kv_cache.int8 = stored == "int8";
    m.kv_cache.float16 = stored == "float16";
    if (stored != "float32" && !m.kv_cache.resident) r.bad("kv_cache.dtype", "\"float32\" under the copy contract");
    const Json& weights = r.object(root, "", "weights");
    const Json& order = r.field(weights, "weights", "order");
    if (order.kind != Json::Kind::Array) r.bad("weights.order", "an array of names");
    const Json& aliases = r.object(weights, "weights", "aliases");  // parameter -> stored tensor of identical bytes
    for (const Json& name : order.items) {
        m.weight_order.push_back(r.text(name, "weights.order[]"));
        const Json* stored = aliases.get(m.weight_order.back());
        m.weight_stored.push_back(stored ? r.text(*stored, "weights.aliases." + m.weight_order.back()) : m.weight_order.back());
    }
    const Json& outputs = r.field(r.object(root, "", "signature"), "signature", "outputs");
    if (outputs.kind != Json::Kind::Array || outputs.items.empty() || outputs.items[0].kind != Json::Kind::Object)
        r.bad("signature.outputs", "a non-empty array of outputs");
    const Json& shape = r.field(outputs.items[0], "signature.outputs[0]", "shape");
    if (shape.kind != Json::Kind::Array || shape.items.size() != 3)
        r.bad("signature.outputs[0].shape", "the logits shape [1, tokens, vocab]");
    m.vocab = r.integer(shape.items[2], "signature.outputs[0].shape[2]");
    const Json* tok = root.get("tokenizer");
    if (!tok || tok->is_null()) throw UnsupportedError(m.path + ": the artifact carries no tokenizer (field 'tokenizer' is null)");
    if (tok->kind != Json::Kind::Object) r.bad("tokenizer", "an object");
    m.tokenizer_kind = r.text(r.field(*tok, "tokenizer", "kind"), "tokenizer.kind");
    if (m.tokenizer_kind != "huggingface")
        throw UnsupportedError(m.path + ": tokenizer.kind \"" + m.tokenizer_kind +
                               "\" is not supported by the native runtime (only \"huggingface\")");
    m.tokenizer_file = r.text(r.field(*tok, "tokenizer", "file"), "tokenizer.file");
    const Json* eos = tok->get("eos_token");
    if (eos && !eos->is_null()) m.eos_token = r.text(*eos, "tokenizer.eos_token");
    return m;
}

}  // namespace slmc
