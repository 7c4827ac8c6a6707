// A read-only memory mapping of a whole file (the weights: never copied into RAM by the runtime;
// the kernel pages them in from the page cache on demand).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace slmc {

class MappedFile {
  public:
    // Maps `path`; throws IoError naming the file when it cannot be opened or mapped.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace slmc
