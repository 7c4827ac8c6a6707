// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}), applied as Hugging Face's
// BPE::tokenize applies it (no dropout).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "components.hpp"

namespace slmc {

struct PairHash {
    size_t operator()(uint64_t k) const { return std::hash<uint64_t>()(k); }
};

class Bpe {
  public:
    Bpe(const Json& model, const BuildContext& ctx);
    std::vector<int32_t> tokenize(const std::u32string& piece) const;
    int32_t token_to_id(const std::string& token) const;
    const std::string* id_to_token(int32_t id) const;
    size_t vocab_size() const { return vocab_.size(); }

  private:
    struct Merge { uint32_t rank; int32_t id; };
    std::unordered_map<std::string, int32_t> vocab_;
    std::unordered_map<int32_t, std::string> reverse_;
    std::unordered_map<uint64_t, Merge, PairHash> merges_;
    int32_t unk_id_ = -1;
    bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
    int32_t byte_ids_[256];
};

}  // namespace slmc
