// Pre-tokenizers: ByteLevel, Split (known regexes or a literal string), Metaspace, Digits, Sequence.
#include <algorithm>
#include <functional>
#include <map>

#include "byte_level.hpp"
#include "components.hpp"
#include "errors.hpp"
#include "split_patterns.hpp"
#include "unicode.hpp"
#include "utf8.hpp"

namespace slmc {
namespace {

enum class Behavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

struct Segment {
    size_t begin, end;
    bool is_match;
};

// Covers the text with segments from matches (HF Pattern::find_matches), inverting when asked.
std::vector<Segment> segments_of(const std::vector<Span>& matches, size_t size, bool invert) {
    std::vector<Segment> out;
    if (size == 0) return {{0, 0, false}};
    size_t prev = 0;
    for (const Span& m : matches) {
        if (prev != m.first) out.push_back({prev, m.first, invert});
        out.push_back({m.first, m.second, !invert});
        prev = m.second;
    }
    if (prev != size) out.push_back({prev, size, invert});
    return out;
}

// HF NormalizedString::split: which segments become pieces, merged per behavior.
std::vector<Piece> split_piece(const Piece& piece, const std::vector<Segment>& segs, Behavior behavior) {
    std::vector<std::pair<Span, bool>> keep;  // span, removed
    bool previous = false;
    switch (behavior) {
        case Behavior::Isolated:
            for (const auto& s : segs) keep.push_back({{s.begin, s.end}, false});
            break;
        case Behavior::Removed:
            for (const auto& s : segs) keep.push_back({{s.begin, s.end}, s.is_match});
            break;
        case Behavior::Contiguous:
            for (const auto& s : segs) {
                if (s.is_match == previous && !keep.empty()) keep.back().first.second = s.end;
                else keep.push_back({{s.begin, s.end}, false});
                previous = s.is_match;
            }
            break;
        case Behavior::MergedWithPrevious:
            for (const auto& s : segs) {
                if (s.is_match && !previous && !keep.empty()) keep.back().first.second = s.end;
                else keep.push_back({{s.begin, s.end}, false});
                previous = s.is_match;
            }
            break;
        case Behavior::MergedWithNext:
            for (size_t k = segs.size(); k-- > 0;) {
                const auto& s = segs[k];
                if (s.is_match && !previous && !keep.empty()) keep.back().first.first = s.begin;
                else keep.push_back({{s.begin, s.end}, false});
                previous = s.is_match;
            }
            std::reverse(keep.begin(), keep.end());
            break;
    }
    std::vector<Piece> out;
    for (const auto& k : keep) {
        if (k.second || k.first.second <= k.first.first) continue;
        Piece p;
        p.text = piece.text.substr(k.first.first, k.first.second - k.first.first);
        p.at_origin = piece.at_origin && k.first.first == 0;
        out.push_back(std::move(p));
    }
    return out;
}

std::vector<Span> char_matches(const std::u32string& t, const std::function<bool(char32_t)>& pred) {
    std::vector<Span> m;
    for (size_t i = 0; i < t.size(); ++i)
        if (pred(t[i])) m.emplace_back(i, i + 1);
    return m;
}

std::vector<Span> literal_matches(const std::u32string& t, const std::u32string& lit) {
    std::vector<Span> m;
    if (lit.empty()) return m;
    for (size_t i = 0, at; (at = t.find(lit, i)) != std::u32string::npos; i = at + lit.size()) m.emplace_back(at, at + lit.size());
    return m;
}

struct ByteLevel : PreTokenizer {
    bool add_prefix_space = false, use_regex = true;
    SplitMatcher regex = find_split_matcher(kGpt2Pattern);
    std::vector<Piece> split(const Piece& piece) const override {
        Piece p = piece;
        if (add_prefix_space && (p.text.empty() || p.text[0] != U' ')) p.text.insert(p.text.begin(), U' ');
        std::vector<Piece> parts;
        if (use_regex) parts = split_piece(p, segments_of(regex(p.text), p.text.size(), false), Behavior::Isolated);
        else parts.push_back(p);
        for (Piece& part : parts) {
            std::string bytes = encode_utf8(part.text);
            part.text.clear();
            for (unsigned char b : bytes) part.text.push_back(byte_to_char(b));
        }
        return parts;
    }
};

struct Split : PreTokenizer {
    SplitMatcher regex = nullptr;
    std::u32string literal;
    Behavior behavior = Behavior::Isolated;
    bool invert = false;
    std::vector<Piece> split(const Piece& piece) const override {
        std::vector<Span> m = regex ? regex(piece.text) : literal_matches(piece.text, literal);
        return split_piece(piece, segments_of(m, piece.text.size(), invert), behavior);
    }
};

enum class Prepend { Always, First, Never };

struct Metaspace : PreTokenizer {
    char32_t replacement = 0x2581;
    Prepend prepend = Prepend::Always;
    bool split_on_replacement = true;
    std::vector<Piece> split(const Piece& piece) const override {
        Piece p = piece;
        for (char32_t& c : p.text)
            if (c == U' ') c = replacement;
        bool starts = !p.text.empty() && p.text[0] == replacement;
        if ((prepend == Prepend::Always && !starts) || (prepend == Prepend::First && !starts && p.at_origin))
            p.text.insert(p.text.begin(), replacement);
        if (!split_on_replacement) return {p};
        char32_t r = replacement;
        return split_piece(p, segments_of(char_matches(p.text, [r](char32_t c) { return c == r; }), p.text.size(), false),
                           Behavior::MergedWithNext);
    }
};

struct Digits : PreTokenizer {
    bool individual = false;
    std::vector<Piece> split(const Piece& piece) const override {
        return split_piece(piece, segments_of(char_matches(piece.text, is_number), piece.text.size(), false),
                           individual ? Behavior::Isolated : Behavior::Contiguous);
    }
};

struct Sequence : PreTokenizer {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    std::vector<Piece> split(const Piece& piece) const override {
        std::vector<Piece> pieces{piece};
        for (const auto& step : steps) {
            std::vector<Piece> next;
            for (const Piece& p : pieces)
                for (Piece& q : step->split(p))
                    if (!q.text.empty()) next.push_back(std::move(q));
            pieces = std::move(next);
        }
        return pieces;
    }
};

Behavior behavior_of(const std::string& name, const BuildContext& c, const std::string& w) {
    static const std::map<std::string, Behavior> names = {{"Isolated", Behavior::Isolated},
                                                          {"Removed", Behavior::Removed},
                                                          {"MergedWithPrevious", Behavior::MergedWithPrevious},
                                                          {"MergedWithNext", Behavior::MergedWithNext},
                                                          {"Contiguous", Behavior::Contiguous}};
    auto it = names.find(name);
    if (it == names.end()) throw FormatError(c.source + ": " + w + ".behavior: unknown split behavior \"" + name + "\"");
    return it->second;
}

const ComponentRegistry<PreTokenizer>& registry() {
    static const ComponentRegistry<PreTokenizer> r = {
        {"ByteLevel",
         [](const Json& j, const BuildContext& c, const std::string& w) {
             auto p = std::make_unique<ByteLevel>();
             p->add_prefix_space = bool_field(j, "add_prefix_space", true, c, w);
             p->use_regex = bool_field(j, "use_regex", true, c, w);
             return std::unique_ptr<PreTokenizer>(std::move(p));
         }},
        {"Split",
         [](const Json& j, const BuildContext& c, const std::string& w) {
             auto p = std::make_unique<Split>();
             const Json& pattern = field(j, "pattern", c, w);
             if (pattern.get("Regex")) {
                 try {
                     p->regex = find_split_matcher(string_field(pattern, "Regex", c, w + ".pattern"));
                 } catch (const UnsupportedError& e) {
                     throw UnsupportedError(c.source + ": " + w + ".pattern: " + e.what());
                 }
             } else {
                 std::string lit = string_field(pattern, "String", c, w + ".pattern");
                 p->literal = decode_utf8_replace(lit.data(), lit.size());
             }
             p->behavior = behavior_of(string_field(j, "behavior", c, w), c, w);
             p->invert = bool_field(j, "invert", false, c, w);
             return std::unique_ptr<PreTokenizer>(std::move(p));
         }},
        {"Metaspace",
         [](const Json& j, const BuildContext& c, const std::string& w) {
             auto p = std::make_unique<Metaspace>();
             std::string rep = string_field(j, "replacement", c, w);
             std::u32string r = decode_utf8_replace(rep.data(), rep.size());
             if (r.size() != 1) throw FormatError(c.source + ": " + w + ".replacement: expected one character");
             p->replacement = r[0];
             const Json* scheme = j.get("prepend_scheme");
             if (scheme && !scheme->is_null()) {
                 static const std::map<std::string, Prepend> schemes = {
                     {"always", Prepend::Always}, {"first", Prepend::First}, {"never", Prepend::Never}};
                 auto it = schemes.find(string_field(j, "prepend_scheme", c, w));
                 if (it == schemes.end()) throw FormatError(c.source + ": " + w + ".prepend_scheme: expected always, first or never");
                 p->prepend = it->second;
             } else {
                 p->prepend = bool_field(j, "add_prefix_space", true, c, w) ? Prepend::Always : Prepend::Never;
             }
             p->split_on_replacement = bool_field(j, "split", true, c, w);
             return std::unique_ptr<PreTokenizer>(std::move(p));
         }},
        {"Digits",
         [](const Json& j, const BuildContext& c, const std::string& w) {
             auto p = std::make_unique<Digits>();
             p->individual = bool_field(j, "individual_digits", false, c, w);
             return std::unique_ptr<PreTokenizer>(std::move(p));
         }},
        {"Sequence", sequence_factory<PreTokenizer, Sequence>("pretokenizers", build_pre_tokenizer)},
    };
    return r;
}

}  // namespace

std::unique_ptr<PreTokenizer> build_pre_tokenizer(const Json& j, const BuildContext& ctx, const std::string& where) {
    return build_component(registry(), "pre-tokenizer", j, ctx, where);
}

}  // namespace slmc
