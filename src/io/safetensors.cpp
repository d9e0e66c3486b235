// safetensors read/write. The header is JSON (nlohmann, kept out of the header file); the data
// section is raw little-endian bytes, copied with memcpy because offsets carry no alignment.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "util/error.h"

namespace slim {

using nlohmann::json;

namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and is copied as is");

// The reference implementation refuses headers above 100 MB; a larger length is a corrupt file,
// not a real header, and must not drive a huge allocation.
constexpr uint64_t kMaxHeaderBytes = uint64_t(100) << 20;
constexpr const char* kMetadataKey = "__metadata__";

constexpr StDType kAllDTypes[] = {StDType::F32, StDType::F16, StDType::BF16,
                                  StDType::I32, StDType::I64, StDType::U16};

bool parse_dtype(const std::string& text, StDType* dtype) {
  for (StDType candidate : kAllDTypes)
    if (text == st_dtype_name(candidate)) {
      *dtype = candidate;
      return true;
    }
  return false;
}

// Element count of a shape, or false if it overflows size_t.
bool count_elements(const std::vector<int64_t>& shape, size_t* numel) {
  size_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return false;
    if (dim != 0 && count > std::numeric_limits<size_t>::max() / size_t(dim)) return false;
    count *= size_t(dim);
  }
  *numel = count;
  return true;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

float bf16_to_float(uint16_t bits) { return std::bit_cast<float>(uint32_t(bits) << 16); }

float f16_to_float(uint16_t bits) {
  const uint32_t sign = uint32_t(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0)  // rebias the exponent from 15 to 127
    return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  const float subnormal = std::ldexp(float(mantissa), -24);  // 0 when mantissa is 0
  return sign ? -subnormal : subnormal;
}

std::string read_whole_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(cat("cannot open '", path, "': ", std::strerror(errno)));
  std::string content;
  struct stat info;
  if (::fstat(fd, &info) == 0 && info.st_size > 0) content.reserve(size_t(info.st_size));
  char buffer[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof(buffer));
    if (got < 0) {
      if (errno == EINTR) continue;
      const std::string reason = std::strerror(errno);
      ::close(fd);
      throw Error(cat("cannot read '", path, "': ", reason));
    }
    if (got == 0) break;
    content.append(buffer, size_t(got));
  }
  ::close(fd);  // read-only: a failed close loses nothing
  return content;
}

}  // namespace

const char* st_dtype_name(StDType dtype) {
  switch (dtype) {
    case StDType::F32: return "F32";
    case StDType::F16: return "F16";
    case StDType::BF16: return "BF16";
    case StDType::I32: return "I32";
    case StDType::I64: return "I64";
    case StDType::U16: return "U16";
  }
  return "?";
}

size_t st_dtype_bytes(StDType dtype) {
  switch (dtype) {
    case StDType::F32: return 4;
    case StDType::F16: return 2;
    case StDType::BF16: return 2;
    case StDType::I32: return 4;
    case StDType::I64: return 8;
    case StDType::U16: return 2;
  }
  return 0;
}

void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const StTensor*> sorted;
  for (const StTensor& tensor : tensors) sorted.push_back(&tensor);
  std::sort(sorted.begin(), sorted.end(),
            [](const StTensor* a, const StTensor* b) { return a->name < b->name; });

  json header = json::object();
  std::vector<FilePiece> data_pieces;
  size_t offset = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const StTensor& tensor = *sorted[i];
    if (tensor.name.empty() || tensor.name == kMetadataKey)
      throw Error(cat("cannot write '", path, "': tensor name '", tensor.name,
                      "' is reserved or empty"));
    if (i > 0 && sorted[i - 1]->name == tensor.name)
      throw Error(cat("cannot write '", path, "': tensor '", tensor.name, "' is given twice"));
    size_t numel = 0;
    if (!count_elements(tensor.shape, &numel))
      throw Error(cat("cannot write '", path, "': tensor '", tensor.name, "' has shape ",
                      shape_text(tensor.shape), " (negative or overflowing)"));
    const size_t bytes = numel * st_dtype_bytes(tensor.dtype);
    if (bytes > 0 && tensor.data == nullptr)
      throw Error(cat("cannot write '", path, "': tensor '", tensor.name, "' has no data"));
    header[tensor.name] = {{"dtype", st_dtype_name(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + bytes}}};
    data_pieces.push_back({tensor.data, bytes});
    offset += bytes;
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;

  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // data section starts 8-aligned
  const uint64_t header_length = header_text.size();  // written little-endian (host order)

  std::vector<FilePiece> pieces = {{&header_length, sizeof(header_length)},
                                   {header_text.data(), header_text.size()}};
  pieces.insert(pieces.end(), data_pieces.begin(), data_pieces.end());
  write_file_atomic(path, pieces);
}

SafetensorsFile read_safetensors(const std::string& path) {
  const std::string content = read_whole_file(path);
  const auto bad = [&](const std::string& what) {
    return Error(cat("'", path, "' is not a valid safetensors file: ", what));
  };
  if (content.size() < 8)
    throw bad(cat("it has ", content.size(), " bytes, fewer than the 8-byte header length"));
  uint64_t header_length = 0;
  std::memcpy(&header_length, content.data(), 8);
  if (header_length == 0 || header_length > content.size() - 8 ||
      header_length > kMaxHeaderBytes)
    throw bad(cat("the header length at offset 0 says ", header_length, " bytes, but the file has ",
                  content.size() - 8, " bytes after it (limit ", kMaxHeaderBytes, ")"));

  json header;
  try {
    header = json::parse(content.begin() + 8, content.begin() + 8 + std::ptrdiff_t(header_length));
  } catch (const json::exception& e) {
    throw bad(cat("the JSON header (bytes 8..", 8 + header_length, ") does not parse: ", e.what()));
  }
  if (!header.is_object()) throw bad("the JSON header is not an object");

  SafetensorsFile file;
  file.path = path;
  const size_t data_start = 8 + size_t(header_length);
  const size_t data_bytes = content.size() - data_start;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) throw bad("\"__metadata__\" is not an object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) throw bad(cat("metadata '", key, "' is not a string"));
        file.metadata[key] = text.get<std::string>();
      }
      continue;
    }
    const auto bad_tensor = [&](const std::string& what) {
      return bad(cat("tensor '", name, "': ", what));
    };
    if (!value.is_object() || !value.contains("dtype") || !value["dtype"].is_string() ||
        !value.contains("shape") || !value["shape"].is_array() ||
        !value.contains("data_offsets") || !value["data_offsets"].is_array())
      throw bad_tensor("needs \"dtype\" (string), \"shape\" and \"data_offsets\" (arrays)");
    SafetensorsFile::Entry entry;
    const std::string dtype_text = value["dtype"].get<std::string>();
    if (!parse_dtype(dtype_text, &entry.dtype))
      throw bad_tensor(cat("dtype '", dtype_text,
                           "' is not supported (supported: F32, F16, BF16, I32, I64, U16)"));
    for (const json& dim : value["shape"]) {
      if (!dim.is_number_integer() || dim.get<int64_t>() < 0)
        throw bad_tensor(cat("shape ", value["shape"].dump(), " has a non-integer or negative "
                             "dimension"));
      entry.shape.push_back(dim.get<int64_t>());
    }
    const json& offsets = value["data_offsets"];
    if (offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      throw bad_tensor(cat("data_offsets ", offsets.dump(), " is not [begin, end]"));
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_bytes)
      throw bad_tensor(cat("data_offsets [", begin, ", ", end, "] do not lie within the ",
                           data_bytes, "-byte data section (the file may be truncated)"));
    size_t numel = 0;
    if (!count_elements(entry.shape, &numel) ||
        numel > std::numeric_limits<size_t>::max() / st_dtype_bytes(entry.dtype) ||
        numel * st_dtype_bytes(entry.dtype) != end - begin)
      throw bad_tensor(cat("shape ", shape_text(entry.shape), " of ", dtype_text, " needs ",
                           numel * st_dtype_bytes(entry.dtype), " bytes but data_offsets [",
                           begin, ", ", end, "] hold ", end - begin));
    entry.begin = size_t(begin);
    entry.end = size_t(end);
    file.entries.emplace(name, std::move(entry));
  }

  // The tensors must tile the data section exactly: a gap or an overlap means a corrupt header.
  std::vector<std::tuple<size_t, size_t, const std::string*>> by_offset;  // begin, end, name
  for (const auto& [name, entry] : file.entries) by_offset.emplace_back(entry.begin, entry.end, &name);
  std::sort(by_offset.begin(), by_offset.end());
  size_t covered = 0;
  for (const auto& [begin, end, name] : by_offset) {
    if (begin != covered)
      throw bad(cat("tensor '", *name, "' starts at data offset ", begin, " but the previous "
                    "tensor ends at ", covered, " (gap or overlap)"));
    covered = end;
  }
  if (covered != data_bytes)
    throw bad(cat("the tensors end at data offset ", covered, " but the data section has ",
                  data_bytes, " bytes"));

  file.bytes.assign(content.begin() + std::ptrdiff_t(data_start), content.end());
  return file;
}

bool SafetensorsFile::has(const std::string& name) const { return entries.count(name) > 0; }

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  const auto it = entries.find(name);
  if (it != entries.end()) return it->second;
  std::string some;
  size_t listed = 0;
  for (const auto& [held, e] : entries) {
    if (listed++ == 8) {
      some += ", ...";
      break;
    }
    some += (some.empty() ? "" : ", ") + held;
  }
  throw Error(cat("'", path, "' has no tensor '", name, "' (", entries.size(), " tensors: ",
                  some.empty() ? "none" : some, ")"));
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
  const Entry& e = entry(name);
  const uint8_t* src = bytes.data() + e.begin;
  const size_t numel = (e.end - e.begin) / st_dtype_bytes(e.dtype);
  std::vector<float> out(numel);
  switch (e.dtype) {
    case StDType::F32:
      if (numel > 0) std::memcpy(out.data(), src, numel * sizeof(float));
      return out;
    case StDType::BF16:
    case StDType::F16:
      for (size_t i = 0; i < numel; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        out[i] = e.dtype == StDType::BF16 ? bf16_to_float(bits) : f16_to_float(bits);
      }
      return out;
    default:
      throw Error(cat("tensor '", name, "' in '", path, "' is ", st_dtype_name(e.dtype),
                      "; a float tensor (F32, BF16 or F16) was expected"));
  }
}

std::vector<int32_t> SafetensorsFile::read_i32(const std::string& name) const {
  const Entry& e = entry(name);
  const uint8_t* src = bytes.data() + e.begin;
  const size_t numel = (e.end - e.begin) / st_dtype_bytes(e.dtype);
  std::vector<int32_t> out(numel);
  switch (e.dtype) {
    case StDType::I32:
      if (numel > 0) std::memcpy(out.data(), src, numel * sizeof(int32_t));
      return out;
    case StDType::U16:
      for (size_t i = 0; i < numel; ++i) {
        uint16_t value;
        std::memcpy(&value, src + 2 * i, 2);
        out[i] = value;
      }
      return out;
    case StDType::I64:
      for (size_t i = 0; i < numel; ++i) {
        int64_t value;
        std::memcpy(&value, src + 8 * i, 8);
        if (value < std::numeric_limits<int32_t>::min() ||
            value > std::numeric_limits<int32_t>::max())
          throw Error(cat("tensor '", name, "' in '", path, "' holds ", value, " at element ", i,
                          ", which does not fit in int32"));
        out[i] = int32_t(value);
      }
      return out;
    default:
      throw Error(cat("tensor '", name, "' in '", path, "' is ", st_dtype_name(e.dtype),
                      "; an integer tensor (I32, U16 or I64) was expected"));
  }
}

}  // namespace slim
