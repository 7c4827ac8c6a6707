// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}), applied as Hugging Face's
// BPE::tokenize applies it (no dropout).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "components.hpp"
#include "token_table.hpp"

namespace slmc {

class Bpe {
  public:
    Bpe(const Json& model, const BuildContext& ctx);
    std::vector<int32_t> tokenize(const std::u32string& piece) const;
    int32_t token_to_id(const std::string& token) const;
    std::optional<std::string_view> id_to_token(int32_t id) const;
    size_t vocab_size() const { return vocab_.size(); }

  private:
    using Merge = MergeTable::Merge;
    TokenTable vocab_;
    MergeTable merges_;
    int32_t unk_id_ = -1;
    bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
    int32_t byte_ids_[256];
};

}  // namespace slmc
