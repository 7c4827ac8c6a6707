#include "tokenizer.hpp"

#include <algorithm>

#include "errors.hpp"
#include "read_file.hpp"
#include "unicode.hpp"
#include "utf8.hpp"

namespace slmc {
namespace {

int32_t lookup(const void* self, const std::string& token) { return static_cast<const Tokenizer*>(self)->token_to_id(token); }

std::u32string u32(const std::string& s) { return decode_utf8_replace(s.data(), s.size()); }

}  // namespace

Tokenizer::Tokenizer(const std::string& path) : source_(path) {
    Json root = parse_json(read_file(path), path);
    if (root.kind != Json::Kind::Object) throw FormatError(path + ": expected a JSON object at the top level");
    BuildContext ctx{path, lookup, this};
    const Json& model = field(root, "model", ctx, "<document>");
    const Json* type = model.get("type");
    std::string model_type = type && type->kind == Json::Kind::String ? type->text : "";
    if (model_type != "BPE")
        throw UnsupportedError(path + ": model.type: \"" + model_type +
                               "\" is not supported by slmc's native tokenizer (supported: BPE)");
    model_ = std::make_unique<Bpe>(model, ctx);
    const Json null_json;
    auto part = [&](const char* k) -> const Json& {
        const Json* v = root.get(k);
        return v ? *v : null_json;
    };
    normalizer_ = build_normalizer(part("normalizer"), ctx, "normalizer");
    pre_tokenizer_ = build_pre_tokenizer(part("pre_tokenizer"), ctx, "pre_tokenizer");
    post_processor_ = build_post_processor(part("post_processor"), ctx, "post_processor");
    decoder_ = build_decoder(part("decoder"), ctx, "decoder");
    load_added_tokens(part("added_tokens"), ctx);
}

void Tokenizer::load_added_tokens(const Json& list, const BuildContext& ctx) {
    if (list.is_null()) return;
    if (list.kind != Json::Kind::Array) throw FormatError(source_ + ": added_tokens: expected a list");
    std::vector<AddedToken> special, plain;
    for (size_t i = 0; i < list.items.size(); ++i) {
        const Json& t = list.items[i];
        std::string w = "added_tokens[" + std::to_string(i) + "]";
        std::string content = string_field(t, "content", ctx, w);
        if (content.empty() || added_ids_.count(content)) continue;
        AddedToken a;
        a.content = u32(content);
        a.special = bool_field(t, "special", false, ctx, w);
        a.single_word = bool_field(t, "single_word", false, ctx, w);
        a.lstrip = bool_field(t, "lstrip", false, ctx, w);
        a.rstrip = bool_field(t, "rstrip", false, ctx, w);
        a.normalized = bool_field(t, "normalized", !a.special, ctx, w);
        // HF AddedVocabulary::add_tokens: the model's id when it has the token, else the next free id.
        a.id = model_->token_to_id(content);
        if (a.id < 0) {
            int32_t max = -1;
            for (const auto& kv : added_ids_) max = std::max(max, kv.second);
            int32_t size = int32_t(model_->vocab_size());
            a.id = max < 0 ? size : ((max >= size || size == 0) ? max + 1 : size);
        }
        a.pattern = a.normalized && normalizer_ ? normalizer_->normalize(a.content) : a.content;
        added_ids_[content] = a.id;
        if (a.special) special_contents_.insert(content);
        (a.special ? special : plain).push_back(a);
    }
    added_ = special;
    added_.insert(added_.end(), plain.begin(), plain.end());
    for (size_t i = 0; i < added_.size(); ++i) added_by_id_[added_[i].id] = i;
}

int32_t Tokenizer::token_to_id(const std::string& token) const {
    auto it = added_ids_.find(token);
    return it != added_ids_.end() ? it->second : model_->token_to_id(token);
}

size_t Tokenizer::vocab_size() const {
    int32_t max = -1;
    for (const auto& kv : added_ids_) max = std::max(max, kv.second);
    return std::max(size_t(max + 1), model_->vocab_size());
}

// HF AddedVocabulary::find_matches + split_with_indices on one piece.
std::vector<Piece> Tokenizer::split_added(const Piece& piece, bool normalized_set) const {
    const std::u32string& t = piece.text;
    std::vector<Piece> out;
    auto emit = [&](size_t b, size_t e, int32_t id) {
        if (e <= b) return;
        Piece p;
        p.text = t.substr(b, e - b);
        p.at_origin = piece.at_origin && b == 0;
        p.added_id = id;
        out.push_back(std::move(p));
    };
    size_t start_offset = 0, i = 0;
    while (i < t.size()) {
        // Leftmost-longest match at i (aho-corasick MatchKind::LeftmostLongest).
        const AddedToken* best = nullptr;
        for (const AddedToken& a : added_) {
            if (a.normalized != normalized_set || a.pattern.empty() || a.pattern.size() > t.size() - i) continue;
            if ((!best || a.pattern.size() > best->pattern.size()) && t.compare(i, a.pattern.size(), a.pattern) == 0) best = &a;
        }
        if (!best) { ++i; continue; }
        size_t start = i, stop = i + best->pattern.size();
        i = stop;
        if (best->single_word) {
            bool start_space = start == 0 || !is_word(t[start - 1]);
            bool stop_space = stop == t.size() || !is_word(t[stop]);
            if (!start_space || !stop_space) continue;
        }
        if (best->lstrip) {
            size_t s = start;
            while (s > 0 && is_white_space(t[s - 1])) --s;
            start = std::max(s, start_offset);
        }
        if (best->rstrip)
            while (stop < t.size() && is_white_space(t[stop])) ++stop;
        emit(start_offset, start, -1);
        emit(start, stop, best->id);
        start_offset = stop;
        i = std::max(i, stop);
    }
    emit(start_offset, t.size(), -1);
    return out;
}

std::vector<int32_t> Tokenizer::encode(const char* utf8, size_t len, bool add_special_tokens) const {
    Piece whole;
    whole.text = decode_utf8_replace(utf8, len);
    whole.at_origin = true;
    std::vector<Piece> pieces;
    for (Piece& p : split_added(whole, false)) {
        if (p.added_id >= 0) { pieces.push_back(std::move(p)); continue; }
        if (normalizer_) p.text = normalizer_->normalize(p.text);
        for (Piece& q : split_added(p, true))
            if (!q.text.empty()) pieces.push_back(std::move(q));
    }
    std::vector<int32_t> ids;
    for (const Piece& p : pieces) {
        if (p.added_id >= 0) { ids.push_back(p.added_id); continue; }
        std::vector<Piece> words;
        if (pre_tokenizer_) words = pre_tokenizer_->split(p);
        else words.push_back(p);
        for (const Piece& w : words) {
            if (w.text.empty()) continue;
            std::vector<int32_t> t = model_->tokenize(w.text);
            ids.insert(ids.end(), t.begin(), t.end());
        }
    }
    if (add_special_tokens && post_processor_) ids = post_processor_->process(std::move(ids));
    return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
    std::vector<std::string> tokens;
    for (int32_t id : ids) {
        auto added = added_by_id_.find(id);
        std::string token;
        if (added != added_by_id_.end()) token = encode_utf8(added_.at(added->second).content);
        else if (auto t = model_->id_to_token(id)) token = std::string(*t);
        else continue;  // unknown ids are skipped, as HF skips them
        if (skip_special_tokens && special_contents_.count(token)) continue;
        tokens.push_back(std::move(token));
    }
    if (!decoder_) {
        std::string joined;
        for (size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
        return joined;
    }
    std::string out;
    for (const std::string& t : decoder_->decode_chain(std::move(tokens))) out += t;
    return out;
}

namespace {

bool ends_with_replacement(const std::string& s) { return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0; }

}  // namespace

std::string DecodeStream::step(int32_t id) {
    if (prefix_.empty() && !ids_.empty()) {
        std::string new_prefix = tok_.decode(ids_, skip_);
        if (!ends_with_replacement(new_prefix)) {
            prefix_ = new_prefix;
            prefix_index_ = ids_.size();
        }
    }
    ids_.push_back(id);
    std::string text = tok_.decode(ids_, skip_);
    if (text.size() > prefix_.size() && !ends_with_replacement(text)) {
        if (text.compare(0, prefix_.size(), prefix_) != 0)
            throw FormatError("streaming decode produced text that does not extend the text already emitted");
        std::string new_text = text.substr(prefix_.size());
        size_t new_prefix_index = ids_.size() - prefix_index_;
        ids_.erase(ids_.begin(), ids_.begin() + long(prefix_index_));
        prefix_ = tok_.decode(ids_, skip_);
        prefix_index_ = new_prefix_index;
        return new_text;
    }
    return {};
}

}  // namespace slmc
