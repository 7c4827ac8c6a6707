#include "utf8.hpp"

namespace slmc {

std::u32string decode_utf8_replace(const char* s, size_t n) {
    const unsigned char* b = reinterpret_cast<const unsigned char*>(s);
    std::u32string out;
    out.reserve(n);
    size_t i = 0;
    while (i < n) {
        unsigned c = b[i];
        if (c < 0x80) { out.push_back(c); ++i; continue; }
        int need;
        unsigned lo = 0x80, hi = 0xBF, cp;
        if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; }
        else if (c == 0xE0) { need = 2; lo = 0xA0; cp = c & 0x0F; }
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) { need = 2; cp = c & 0x0F; }
        else if (c == 0xED) { need = 2; hi = 0x9F; cp = c & 0x0F; }
        else if (c == 0xF0) { need = 3; lo = 0x90; cp = c & 0x07; }
        else if (c >= 0xF1 && c <= 0xF3) { need = 3; cp = c & 0x07; }
        else if (c == 0xF4) { need = 3; hi = 0x8F; cp = c & 0x07; }
        else { out.push_back(0xFFFD); ++i; continue; }
        size_t j = i + 1;
        bool ok = true;
        for (int k = 0; k < need; ++k, ++j) {
            unsigned l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xBF;
            if (j >= n || b[j] < l || b[j] > h) { ok = false; break; }
            cp = (cp << 6) | (b[j] & 0x3F);
        }
        out.push_back(ok ? char32_t(cp) : char32_t(0xFFFD));
        i = j;  // past the whole sequence, or past the maximal invalid subpart
    }
    return out;
}

void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(char(cp));
    } else if (cp < 0x800) {
        out.push_back(char(0xC0 | (cp >> 6)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(char(0xE0 | (cp >> 12)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(char(0xF0 | (cp >> 18)));
        out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    }
}

std::string encode_utf8(const std::u32string& text) {
    std::string out;
    out.reserve(text.size());
    for (char32_t cp : text) append_utf8(out, cp);
    return out;
}

std::string utf8_lossy(const std::string& bytes) { return encode_utf8(decode_utf8_replace(bytes.data(), bytes.size())); }

bool is_valid_utf8(const std::string& bytes) {
    for (char32_t cp : decode_utf8_replace(bytes.data(), bytes.size()))
        if (cp == 0xFFFD) return utf8_lossy(bytes) == bytes;  // a literal U+FFFD is valid
    return true;
}

}  // namespace slmc
