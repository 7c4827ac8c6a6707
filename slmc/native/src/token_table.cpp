#include "token_table.hpp"

#include <algorithm>
#include <functional>

namespace slmc {
namespace {

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

}  // namespace

void TokenTable::add(const std::string& token, int32_t id) {
    entries_.push_back(Entry{static_cast<uint32_t>(bytes_.size()), static_cast<uint32_t>(token.size()), id});
    bytes_ += token;
}

size_t TokenTable::slot_of(std::string_view token) const {
    size_t mask = index_.size() - 1;
    size_t slot = std::hash<std::string_view>()(token) & mask;
    while (index_[slot] != kEmpty && text(entries_[index_[slot]]) != token) slot = (slot + 1) & mask;
    return slot;
}

void TokenTable::build() {
    bytes_.shrink_to_fit();
    entries_.shrink_to_fit();
    size_t capacity = 16;
    while (capacity < 2 * entries_.size()) capacity *= 2;  // load <= 1/2
    index_.assign(capacity, kEmpty);
    int32_t max_id = -1;
    distinct_ = 0;
    for (uint32_t i = 0; i < entries_.size(); ++i) {
        size_t slot = slot_of(text(entries_[i]));
        if (index_[slot] == kEmpty) ++distinct_;
        index_[slot] = i;  // a later duplicate wins
        max_id = std::max(max_id, entries_[i].id);
    }
    by_id_.assign(static_cast<size_t>(max_id + 1), kEmpty);
    for (uint32_t i = 0; i < entries_.size(); ++i)
        if (entries_[i].id >= 0) by_id_[static_cast<size_t>(entries_[i].id)] = i;  // a later duplicate wins
}

int32_t TokenTable::find(std::string_view token) const {
    if (index_.empty()) return -1;
    uint32_t i = index_[slot_of(token)];
    return i == kEmpty ? -1 : entries_[i].id;
}

std::optional<std::string_view> TokenTable::token(int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= by_id_.size() || by_id_[static_cast<size_t>(id)] == kEmpty) return std::nullopt;
    return text(entries_[by_id_[static_cast<size_t>(id)]]);
}

void MergeTable::add(int32_t left, int32_t right, Merge merge) { entries_.push_back(Entry{pair_key(left, right), merge}); }

void MergeTable::build() {
    std::stable_sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.key < b.key; });
    std::vector<Entry> kept;
    kept.reserve(entries_.size());
    for (size_t i = 0; i < entries_.size(); ++i)
        if (i + 1 == entries_.size() || entries_[i + 1].key != entries_[i].key) kept.push_back(entries_[i]);  // the last of equal keys
    entries_.swap(kept);
}

const MergeTable::Merge* MergeTable::find(int32_t left, int32_t right) const {
    uint64_t key = pair_key(left, right);
    auto it = std::lower_bound(entries_.begin(), entries_.end(), key, [](const Entry& e, uint64_t k) { return e.key < k; });
    return it != entries_.end() && it->key == key ? &it->merge : nullptr;
}

}  // namespace slmc
