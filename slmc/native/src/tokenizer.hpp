// A tokenizer.json applied natively: added tokens, normalizer, pre-tokenizer, BPE model,
// post-processor on encode; decoder on decode; and HF's DecodeStream for streaming.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bpe.hpp"
#include "components.hpp"

namespace slmc {

struct AddedToken {
    std::u32string content;
    std::u32string pattern;  // what is matched: content, normalized when `normalized`
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
};

class Tokenizer {
  public:
    explicit Tokenizer(const std::string& path);
    std::vector<int32_t> encode(const char* utf8, size_t len, bool add_special_tokens) const;
    std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;
    int32_t token_to_id(const std::string& token) const;
    size_t vocab_size() const;

  private:
    std::string source_;
    std::unique_ptr<Bpe> model_;
    std::unique_ptr<Normalizer> normalizer_;
    std::unique_ptr<PreTokenizer> pre_tokenizer_;
    std::unique_ptr<PostProcessor> post_processor_;
    std::unique_ptr<Decoder> decoder_;
    std::vector<AddedToken> added_;  // special first, then the others (HF's matching order)
    std::unordered_map<std::string, int32_t> added_ids_;
    std::unordered_map<int32_t, size_t> added_by_id_;
    std::unordered_set<std::string> special_contents_;

    void load_added_tokens(const Json& list, const BuildContext& ctx);
    std::vector<Piece> split_added(const Piece& piece, bool normalized_set) const;
};

// HF tokenizers' DecodeStream over a Tokenizer.
class DecodeStream {
  public:
    DecodeStream(const Tokenizer& tok, bool skip_special_tokens) : tok_(tok), skip_(skip_special_tokens) {}
    // The text `id` completes (empty while a character is incomplete).
    std::string step(int32_t id);

  private:
    const Tokenizer& tok_;
    bool skip_;
    std::vector<int32_t> ids_;
    std::string prefix_;
    size_t prefix_index_ = 0;
};

}  // namespace slmc
