#include "json.hpp"

#include <cstdlib>

#include "errors.hpp"
#include "utf8.hpp"

namespace slmc {

const Json* Json::get(const std::string& key) const {
    if (kind != Kind::Object) return nullptr;
    for (const auto& f : fields)
        if (f.first == key) return &f.second;
    return nullptr;
}

namespace {

class Parser {
  public:
    Parser(const std::string& data, const std::string& source) : s_(data), src_(source) {}

    Json document() {
        Json v = value(0);
        skip_ws();
        if (i_ != s_.size()) fail("unexpected data after the top-level value");
        return v;
    }

  private:
    const std::string& s_;
    const std::string& src_;
    size_t i_ = 0;

    [[noreturn]] void fail(const std::string& what) const {
        throw FormatError(src_ + ": JSON syntax error at byte " + std::to_string(i_) + ": " + what);
    }
    void skip_ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
    }
    void expect_word(const char* word) {
        for (const char* p = word; *p; ++p, ++i_)
            if (i_ >= s_.size() || s_[i_] != *p) fail(std::string("expected '") + word + "'");
    }
    Json value(int depth) {
        if (depth > 512) fail("nesting deeper than 512");
        skip_ws();
        if (i_ >= s_.size()) fail("unexpected end of data, expected a value");
        Json v;
        char c = s_[i_];
        if (c == '{') {
            v.kind = Json::Kind::Object;
            ++i_;
            skip_ws();
            if (i_ < s_.size() && s_[i_] == '}') { ++i_; return v; }
            for (;;) {
                skip_ws();
                if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string key");
                std::string key = string();
                skip_ws();
                if (i_ >= s_.size() || s_[i_] != ':') fail("expected ':'");
                ++i_;
                v.fields.emplace_back(std::move(key), value(depth + 1));
                skip_ws();
                if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
                if (i_ < s_.size() && s_[i_] == '}') { ++i_; return v; }
                fail("expected ',' or '}'");
            }
        }
        if (c == '[') {
            v.kind = Json::Kind::Array;
            ++i_;
            skip_ws();
            if (i_ < s_.size() && s_[i_] == ']') { ++i_; return v; }
            for (;;) {
                v.items.push_back(value(depth + 1));
                skip_ws();
                if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
                if (i_ < s_.size() && s_[i_] == ']') { ++i_; return v; }
                fail("expected ',' or ']'");
            }
        }
        if (c == '"') { v.kind = Json::Kind::String; v.text = string(); return v; }
        if (c == 't') { expect_word("true"); v.kind = Json::Kind::Bool; v.boolean = true; return v; }
        if (c == 'f') { expect_word("false"); v.kind = Json::Kind::Bool; return v; }
        if (c == 'n') { expect_word("null"); return v; }
        if (c == '-' || (c >= '0' && c <= '9')) { v.kind = Json::Kind::Number; v.number = number(); return v; }
        fail(std::string("unexpected character '") + c + "'");
    }
    double number() {
        size_t start = i_;
        if (s_[i_] == '-') ++i_;
        auto digits = [&] {
            size_t d = i_;
            while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
            if (i_ == d) fail("expected a digit");
        };
        digits();
        if (i_ < s_.size() && s_[i_] == '.') { ++i_; digits(); }
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            ++i_;
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
            digits();
        }
        return std::strtod(s_.substr(start, i_ - start).c_str(), nullptr);
    }
    unsigned hex4() {
        if (i_ + 4 > s_.size()) fail("truncated \\u escape");
        unsigned v = 0;
        for (int k = 0; k < 4; ++k, ++i_) {
            char h = s_[i_];
            v <<= 4;
            if (h >= '0' && h <= '9') v |= unsigned(h - '0');
            else if (h >= 'a' && h <= 'f') v |= unsigned(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') v |= unsigned(h - 'A' + 10);
            else fail("bad hex digit in \\u escape");
        }
        return v;
    }
    std::string string() {
        ++i_;  // opening quote
        std::string out;
        for (;;) {
            if (i_ >= s_.size()) fail("unterminated string");
            unsigned char c = static_cast<unsigned char>(s_[i_]);
            if (c == '"') { ++i_; return out; }
            if (c < 0x20) fail("control character in string");
            if (c != '\\') { out.push_back(char(c)); ++i_; continue; }
            ++i_;
            if (i_ >= s_.size()) fail("unterminated escape");
            char e = s_[i_++];
            switch (e) {
                case '"': out.push_back('"'); break;
                case '\\': out.push_back('\\'); break;
                case '/': out.push_back('/'); break;
                case 'b': out.push_back('\b'); break;
                case 'f': out.push_back('\f'); break;
                case 'n': out.push_back('\n'); break;
                case 'r': out.push_back('\r'); break;
                case 't': out.push_back('\t'); break;
                case 'u': {
                    unsigned cp = hex4();
                    if (cp >= 0xD800 && cp <= 0xDBFF && i_ + 1 < s_.size() && s_[i_] == '\\' && s_[i_ + 1] == 'u') {
                        size_t save = i_;
                        i_ += 2;
                        unsigned lo = hex4();
                        if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        else i_ = save;
                    }
                    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // lone surrogate, as serde_json rejects/replaces
                    append_utf8(out, char32_t(cp));
                    break;
                }
                default: --i_; fail(std::string("bad escape '\\") + e + "'");
            }
        }
    }
};

}  // namespace

Json parse_json(const std::string& data, const std::string& source) { return Parser(data, source).document(); }

}  // namespace slmc
