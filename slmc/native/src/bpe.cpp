#include "bpe.hpp"

#include <queue>

#include "errors.hpp"
#include "utf8.hpp"

namespace slmc {

Bpe::Bpe(const Json& model, const BuildContext& ctx) {
    const std::string w = "model";
    const Json* dropout = model.get("dropout");
    if (dropout && !dropout->is_null() && dropout->number > 0)
        throw UnsupportedError(ctx.source + ": model.dropout: BPE dropout is random; slmc's native tokenizer needs it null");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        const Json* v = model.get(k);
        if (v && !v->is_null() && !(v->kind == Json::Kind::String && v->text.empty()))
            throw UnsupportedError(ctx.source + ": model." + k + ": not supported by slmc's native tokenizer (found \"" + v->text + "\")");
    }
    const Json& vocab = field(model, "vocab", ctx, w);
    if (vocab.kind != Json::Kind::Object) throw FormatError(ctx.source + ": model.vocab: expected an object of token: id");
    for (const auto& f : vocab.fields) {
        if (f.second.kind != Json::Kind::Number) throw FormatError(ctx.source + ": model.vocab[\"" + f.first + "\"]: expected an id");
        vocab_.add(f.first, int32_t(f.second.number));
    }
    vocab_.build();
    const Json& merges = field(model, "merges", ctx, w);
    if (merges.kind != Json::Kind::Array) throw FormatError(ctx.source + ": model.merges: expected a list");
    for (size_t r = 0; r < merges.items.size(); ++r) {
        const Json& m = merges.items[r];
        std::string a, b;
        if (m.kind == Json::Kind::String) {  // "a b"
            size_t sp = m.text.find(' ', 1);
            if (sp == std::string::npos) throw FormatError(ctx.source + ": model.merges[" + std::to_string(r) + "]: expected \"a b\"");
            a = m.text.substr(0, sp);
            b = m.text.substr(sp + 1);
        } else if (m.kind == Json::Kind::Array && m.items.size() == 2 && m.items[0].kind == Json::Kind::String &&
                   m.items[1].kind == Json::Kind::String) {  // ["a", "b"]
            a = m.items[0].text;
            b = m.items[1].text;
        } else {
            throw FormatError(ctx.source + ": model.merges[" + std::to_string(r) + "]: expected \"a b\" or [\"a\", \"b\"]");
        }
        int32_t ia = vocab_.find(a), ib = vocab_.find(b), ic = vocab_.find(a + b);
        if (ia < 0 || ib < 0 || ic < 0)
            throw FormatError(ctx.source + ": model.merges[" + std::to_string(r) + "]: \"" + a + "\" + \"" + b + "\" uses a token the vocabulary lacks");
        merges_.add(ia, ib, Merge{uint32_t(r), ic});  // a later duplicate wins, as in HF
    }
    merges_.build();
    const Json* unk = model.get("unk_token");
    if (unk && !unk->is_null()) {
        unk_id_ = vocab_.find(unk->text);
        if (unk_id_ < 0) throw FormatError(ctx.source + ": model.unk_token: \"" + unk->text + "\" is not in the vocabulary");
    }
    byte_fallback_ = bool_field(model, "byte_fallback", false, ctx, w);
    fuse_unk_ = bool_field(model, "fuse_unk", false, ctx, w);
    ignore_merges_ = bool_field(model, "ignore_merges", false, ctx, w);
    for (int b = 0; b < 256; ++b) {
        static const char* hex = "0123456789ABCDEF";
        std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
        byte_ids_[b] = vocab_.find(name);
    }
}

int32_t Bpe::token_to_id(const std::string& token) const { return vocab_.find(token); }

std::optional<std::string_view> Bpe::id_to_token(int32_t id) const { return vocab_.token(id); }

std::vector<int32_t> Bpe::tokenize(const std::u32string& piece) const {
    if (piece.empty()) return {};
    std::string whole = encode_utf8(piece);
    if (ignore_merges_) {
        int32_t id = vocab_.find(whole);
        if (id >= 0) return {id};
    }
    // Symbols, as HF's merge_word builds them (unknown characters: byte fallback, else unk).
    struct Symbol { int32_t id; long prev, next; bool alive; };
    std::vector<int32_t> ids;
    int32_t pending_unk = -1;
    for (char32_t c : piece) {
        std::string s;
        append_utf8(s, c);
        int32_t id = vocab_.find(s);
        if (id >= 0) {
            if (pending_unk >= 0) { ids.push_back(pending_unk); pending_unk = -1; }
            ids.push_back(id);
            continue;
        }
        if (byte_fallback_) {
            bool all = true;
            for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
            if (all) {
                for (unsigned char b : s) ids.push_back(byte_ids_[b]);
                continue;  // HF leaves a pending unk pending here
            }
        }
        if (unk_id_ >= 0) {
            if (pending_unk >= 0 && !fuse_unk_) ids.push_back(pending_unk);
            pending_unk = unk_id_;
        }
    }
    if (pending_unk >= 0) ids.push_back(pending_unk);

    std::vector<Symbol> sym(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) sym[i] = {ids[i], long(i) - 1, i + 1 < ids.size() ? long(i + 1) : -1, true};
    struct Candidate { uint32_t rank; size_t pos; int32_t id; };
    auto worse = [](const Candidate& a, const Candidate& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> queue(worse);
    auto merge_of = [&](int32_t a, int32_t b) -> const Merge* { return merges_.find(a, b); };
    for (size_t i = 0; i + 1 < sym.size(); ++i)
        if (const Merge* m = merge_of(sym[i].id, sym[i + 1].id)) queue.push({m->rank, i, m->id});
    while (!queue.empty()) {
        Candidate top = queue.top();
        queue.pop();
        Symbol& left = sym[top.pos];
        if (!left.alive || left.next < 0) continue;
        Symbol& right = sym[size_t(left.next)];
        const Merge* m = merge_of(left.id, right.id);
        if (!m || m->id != top.id) continue;  // stale entry
        left.id = top.id;
        right.alive = false;
        left.next = right.next;
        if (left.next >= 0) sym[size_t(left.next)].prev = long(top.pos);
        if (left.prev >= 0)
            if (const Merge* pm = merge_of(sym[size_t(left.prev)].id, left.id)) queue.push({pm->rank, size_t(left.prev), pm->id});
        if (left.next >= 0)
            if (const Merge* nm = merge_of(left.id, sym[size_t(left.next)].id)) queue.push({nm->rank, top.pos, nm->id});
    }
    std::vector<int32_t> out;
    for (const Symbol& s : sym)
        if (s.alive) out.push_back(s.id);
    return out;
}

}  // namespace slmc
