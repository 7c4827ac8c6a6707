// A BPE vocabulary and merge list held compactly (issue 18's memory bound: a 151,936-token Qwen
// vocabulary took ~28 MB as node-based hash maps of std::string; here ~5 MB): the token strings in one
// buffer, an open-addressing index from string to id, and the merges as one sorted array.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace slmc {

class TokenTable {
  public:
    // Adds `token` with `id`. A token added twice keeps the later id, and an id given twice names the
    // later token (as assigning into maps in file order does). Call build() after the last add.
    void add(const std::string& token, int32_t id);
    void build();
    int32_t find(std::string_view token) const;              // -1 when absent
    std::optional<std::string_view> token(int32_t id) const;  // nullopt when no token has `id`
    size_t size() const { return distinct_; }                 // distinct tokens

  private:
    struct Entry { uint32_t offset, length; int32_t id; };
    static constexpr uint32_t kEmpty = UINT32_MAX;
    std::string bytes_;                 // every token's bytes, back to back
    std::vector<Entry> entries_;        // in add order
    std::vector<uint32_t> index_;       // open addressing (linear probing) -> entries_ index, kEmpty when free
    std::vector<uint32_t> by_id_;       // id -> entries_ index, kEmpty when no token has the id
    size_t distinct_ = 0;

    std::string_view text(const Entry& e) const { return std::string_view(bytes_).substr(e.offset, e.length); }
    size_t slot_of(std::string_view token) const;  // the slot holding `token`, or the free slot where it belongs
};

// BPE merges: (left id, right id) -> (rank, merged id), one sorted array searched by halving.
class MergeTable {
  public:
    struct Merge { uint32_t rank; int32_t id; };
    // Adds a merge; a pair added twice keeps the later one (HF). Call build() after the last add.
    void add(int32_t left, int32_t right, Merge merge);
    void build();
    const Merge* find(int32_t left, int32_t right) const;

  private:
    struct Entry { uint64_t key; Merge merge; };
    std::vector<Entry> entries_;
};

}  // namespace slmc
