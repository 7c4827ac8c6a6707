// UTF-8 decoding with Python's "replace" semantics (each maximal invalid subpart -> U+FFFD) and
// encoding.
#pragma once

#include <string>

namespace slmc {

// Code points of `bytes`, invalid sequences replaced as bytes.decode("utf-8", "replace") does.
std::u32string decode_utf8_replace(const char* bytes, size_t len);
void append_utf8(std::string& out, char32_t cp);
std::string encode_utf8(const std::u32string& text);
// Same replacement as decode_utf8_replace, re-encoded (Rust's String::from_utf8_lossy).
std::string utf8_lossy(const std::string& bytes);
// True when `bytes` is well-formed UTF-8.
bool is_valid_utf8(const std::string& bytes);

}  // namespace slmc
