// The safetensors file format (Hugging Face's plain tensor container), read and written here
// without a dependency so export and tests can use it:
//
//   [8 bytes] N, little-endian uint64: length of the JSON header
//   [N bytes] JSON {NAME: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
//                   "__metadata__": {str: str}}, padded with spaces so the data starts 8-aligned
//   [rest]    the data section; offsets are relative to its start, tensors lie back to back
//
// Writing puts tensors in sorted-name order. Reading validates everything a corrupt or foreign
// file could get wrong (header length, dtypes, shapes vs byte counts, offsets inside the file,
// no gaps or overlaps) and names the file and the tensor at fault.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace slim {

enum class StDType { F32, F16, BF16, I32, I64, U16 };
const char* st_dtype_name(StDType dtype);  // "F32", "BF16", ... as spelled in the header
size_t st_dtype_bytes(StDType dtype);

// A tensor to write: `data` points at prod(shape) contiguous elements of `dtype`, row-major.
struct StTensor {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  const void* data;  // may be null for a tensor with no elements
};

// Writes PATH atomically (temporary file, fsync, rename). Tensor data is written straight from
// the callers' buffers, not copied.
void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors,
                       const std::map<std::string, std::string>& metadata);

struct SafetensorsFile {
  struct Entry {
    StDType dtype;
    std::vector<int64_t> shape;
    size_t begin, end;  // byte range in `bytes`
  };
  std::string path;  // where it was read from, for error messages
  std::map<std::string, Entry> entries;
  std::map<std::string, std::string> metadata;
  std::vector<uint8_t> bytes;  // the data section

  bool has(const std::string& name) const;
  const Entry& entry(const std::string& name) const;  // missing -> Error naming the file
  // F32 as is; BF16 and F16 widened exactly. Other dtypes -> Error.
  std::vector<float> read_f32(const std::string& name) const;
  // I32 as is; U16 widened; I64 narrowed when every value fits. Other dtypes -> Error.
  std::vector<int32_t> read_i32(const std::string& name) const;
};

SafetensorsFile read_safetensors(const std::string& path);

}  // namespace slim
