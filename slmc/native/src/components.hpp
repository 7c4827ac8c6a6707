// The stages of a Hugging Face tokenizer pipeline as slmc's native tokenizer implements them:
// normalizer, pre-tokenizer, decoder and post-processor, each built from its tokenizer.json object
// by a registry keyed by the object's "type".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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

}  // namespace slmc
