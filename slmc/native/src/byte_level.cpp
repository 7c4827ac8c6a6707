#include "byte_level.hpp"

#include <array>

namespace slmc {
namespace {

struct Tables {
    std::array<char32_t, 256> to_char{};
    std::array<int, 512> to_byte{};
    Tables() {
        to_byte.fill(-1);
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            to_char[size_t(b)] = printable ? char32_t(b) : char32_t(256 + n++);
            to_byte[size_t(to_char[size_t(b)])] = b;
        }
    }
};

const Tables& tables() {
    static const Tables t;
    return t;
}

}  // namespace

char32_t byte_to_char(unsigned char b) { return tables().to_char[b]; }
int char_to_byte(char32_t c) { return c < 512 ? tables().to_byte[c] : -1; }

}  // namespace slmc
