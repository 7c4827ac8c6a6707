// The stages of a Hugging Face tokenizer pipeline as slmc's native tokenizer implements them:
// normalizer, pre-tokenizer, decoder and post-processor, each built from its tokenizer.json object
// by a registry keyed by the object's "type".
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "errors.hpp"
#include "json.hpp"

namespace slmc {

// A piece of the input between the pipeline's stages: text not yet tokenized, or an added token.
struct Piece {
    std::u32string text;
    bool at_origin = false;  // starts at byte 0 of the original input (Metaspace prepend_scheme "first")
    int32_t added_id = -1;   // >= 0: an added token, never normalized, pre-tokenized or modelled
};

struct Normalizer {
    virtual ~Normalizer() = default;
    virtual std::u32string normalize(const std::u32string& text) const = 0;
};

struct PreTokenizer {
    virtual ~PreTokenizer() = default;
    // Splits the text of one piece (added_id < 0) into sub-pieces; empty results are dropped by the caller.
    virtual std::vector<Piece> split(const Piece& piece) const = 0;
};

struct Decoder {
    virtual ~Decoder() = default;
    virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;
};

struct PostProcessor {
    virtual ~PostProcessor() = default;
    // The ids of a single sequence with the processor's special tokens (add_special_tokens=True).
    virtual std::vector<int32_t> process(std::vector<int32_t> ids) const = 0;
};

// Context for building components: the tokenizer.json path (for messages) and token lookups.
struct BuildContext {
    std::string source;
    // The id of a token string in the model vocabulary or added tokens, -1 when absent.
    int32_t (*token_id)(const void* self, const std::string& token) = nullptr;
    const void* self = nullptr;
};

// Each returns nullptr for a JSON null; throws UnsupportedError naming an unknown "type".
std::unique_ptr<Normalizer> build_normalizer(const Json& j, const BuildContext& ctx, const std::string& where);
std::unique_ptr<PreTokenizer> build_pre_tokenizer(const Json& j, const BuildContext& ctx, const std::string& where);
std::unique_ptr<Decoder> build_decoder(const Json& j, const BuildContext& ctx, const std::string& where);
std::unique_ptr<PostProcessor> build_post_processor(const Json& j, const BuildContext& ctx, const std::string& where);

// Field readers: FormatError("<source>: <where>.<key>: expected ...") when missing or mistyped.
const Json& field(const Json& obj, const std::string& key, const BuildContext& ctx, const std::string& where);
std::string string_field(const Json& obj, const std::string& key, const BuildContext& ctx, const std::string& where);
bool bool_field(const Json& obj, const std::string& key, bool fallback, const BuildContext& ctx, const std::string& where);
long int_field(const Json& obj, const std::string& key, const BuildContext& ctx, const std::string& where);
std::string type_of(const Json& obj, const BuildContext& ctx, const std::string& where);

// A stage's registry: its tokenizer.json "type" names -> a factory building it from its object.
template <class Component>
using ComponentFactory = std::function<std::unique_ptr<Component>(const Json&, const BuildContext&, const std::string&)>;
template <class Component>
using ComponentRegistry = std::map<std::string, ComponentFactory<Component>>;

// Builds the component `j` describes from `registry`: nullptr for a JSON null; UnsupportedError
// naming `kind` ("decoder", ...), the unknown type and the supported ones.
template <class Component>
std::unique_ptr<Component> build_component(const ComponentRegistry<Component>& registry, const char* kind, const Json& j,
                                           const BuildContext& ctx, const std::string& where) {
    if (j.is_null()) return nullptr;
    std::string type = type_of(j, ctx, where);
    auto it = registry.find(type);
    if (it == registry.end()) {
        std::string known;
        for (const auto& kv : registry) known += (known.empty() ? "" : ", ") + kv.first;
        throw UnsupportedError(ctx.source + ": " + where + ": " + kind + " type \"" + type + "\" is not supported (supported: " +
                               known + ")");
    }
    return it->second(j, ctx, where);
}

// The factory of a "Sequence" stage: a `SequenceT` (a Component with a `steps` vector) holding the
// stages listed in the object's `list_key`, each built by `build` (null entries are dropped).
// FormatError when the list is missing or is not a list.
template <class Component, class SequenceT>
ComponentFactory<Component> sequence_factory(const char* list_key,
                                             std::unique_ptr<Component> (*build)(const Json&, const BuildContext&, const std::string&)) {
    return [list_key, build](const Json& j, const BuildContext& c, const std::string& w) {
        auto seq = std::make_unique<SequenceT>();
        const Json& list = field(j, list_key, c, w);
        std::string at = w + "." + list_key;
        if (list.kind != Json::Kind::Array) throw FormatError(c.source + ": " + at + ": expected a list");
        for (size_t i = 0; i < list.items.size(); ++i) {
            auto step = build(list.items[i], c, at + "[" + std::to_string(i) + "]");
            if (step) seq->steps.push_back(std::move(step));
        }
        return std::unique_ptr<Component>(std::move(seq));
    };
}

}  // namespace slmc
