// GPT-2's byte <-> printable character map (bytes_to_unicode), used by ByteLevel pre-tokenizers
// and decoders.
#pragma once

#include <string>

namespace slmc {

char32_t byte_to_char(unsigned char b);
// The byte a byte-level character stands for, or -1 when it is not one.
int char_to_byte(char32_t c);

}  // namespace slmc
