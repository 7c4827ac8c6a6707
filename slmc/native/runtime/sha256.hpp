// SHA-256 (FIPS 180-4) of a byte range, as lowercase hex. Own implementation, no third-party code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace slmc {

std::string sha256_hex(const uint8_t* data, size_t size);

}  // namespace slmc
