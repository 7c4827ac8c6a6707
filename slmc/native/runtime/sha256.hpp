// SHA-256 (FIPS 180-4) as lowercase hex. Own implementation, no third-party code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace slmc {

class Sha256 {
  public:
    Sha256();
    void update(const uint8_t* data, size_t size);
    std::string hex();  // once, after the last update

  private:
    uint32_t h_[8];
    uint8_t block_[64] = {0};
    size_t buffered_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_hex(const uint8_t* data, size_t size);

// The hash of a whole file, read through a 64 KiB buffer: the file's pages stay in the page cache and
// never count in this process's resident memory (a mapping hashed in full would be resident until
// unmapped). Throws IoError naming the file.
std::string sha256_file(const std::string& path);

}  // namespace slmc
