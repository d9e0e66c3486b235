// prepare_text: read and validate a UTF-8 text, split it into val/train at a line boundary,
// tokenize it piece by piece, and stream the tokens into llm.c-format shards.
#include "data/prepare.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include "data/shard.h"
#include "data/tokenizer.h"
#include "util/error.h"

namespace slim {
namespace fs = std::filesystem;
namespace {

constexpr uint64_t kProgressMinBytes = 10000000;  // smaller inputs take about a second: no need
constexpr size_t kEncodePieceBytes = 1 << 20;

std::string read_whole_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw Error(cat("input '", path, "' is a directory; give a text file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(cat("cannot read input text '", path, "': ", std::strerror(errno)));
  std::string text;
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  if (size < 0) throw Error(cat("cannot read input text '", path, "': cannot determine its size"));
  in.seekg(0, std::ios::beg);
  text.resize(size_t(size));
  in.read(text.data(), size);
  if (in.gcount() != size)
    throw Error(cat("cannot read input text '", path, "': read ", in.gcount(), " of ", size, " bytes"));
  return text;
}

// 1-based line number of a byte offset, for error messages.
uint64_t line_of(std::string_view text, size_t offset) {
  uint64_t line = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) line += text[i] == '\n';
  return line;
}

// Where the validation text ends: the first line boundary at or after val_fraction of the text,
// or, if that leaves no training text, the last line boundary before it.
size_t val_split_point(std::string_view text, double val_fraction, const std::string& path) {
  size_t target = std::max<size_t>(1, size_t(double(text.size()) * val_fraction));
  size_t newline = text.find('\n', target - 1);
  if (newline != std::string_view::npos && newline + 1 < text.size()) return newline + 1;
  size_t previous = text.rfind('\n', target - 1);
  // rfind may return the very newline found above (it can sit at target - 1): step before it.
  while (previous != std::string_view::npos && previous + 1 >= text.size())
    previous = previous == 0 ? std::string_view::npos : text.rfind('\n', previous - 1);
  if (previous == std::string_view::npos)
    throw Error(cat("cannot split '", path, "' into validation and training text at a line boundary: it has ",
                    "no line break before its last line. Give a text with at least two lines"));
  return previous + 1;
}

// Streams tokens into shards named <prefix>_000000.bin, _000001, ...: each shard is an eot
// followed by up to shard_tokens - 1 text tokens.
class ShardWriter {
 public:
  ShardWriter(std::string prefix, uint64_t shard_tokens, uint16_t eot)
      : prefix_(std::move(prefix)), shard_tokens_(shard_tokens), eot_(eot) {
    start_shard();
  }
  void add(const std::vector<int>& ids) {
    for (int id : ids) {
      if (buffer_.size() == shard_tokens_) {
        flush();
        start_shard();
      }
      buffer_.push_back(uint16_t(id));
    }
  }
  // Writes the last shard unless it holds only its eot (the text ended exactly at a shard end).
  void finish() {
    if (buffer_.size() > 1 || files_.empty()) flush();
    buffer_.clear();
  }
  const std::vector<std::string>& files() const { return files_; }
  uint64_t tokens_written() const { return tokens_written_; }

 private:
  void start_shard() {
    buffer_.clear();
    buffer_.push_back(eot_);
  }
  void flush() {
    char index[16];
    std::snprintf(index, sizeof(index), "%06zu", files_.size());
    std::string path = cat(prefix_, "_", index, ".bin");
    write_shard(path, buffer_);
    files_.push_back(path);
    tokens_written_ += buffer_.size();
  }

  std::string prefix_;
  uint64_t shard_tokens_;
  uint16_t eot_;
  std::vector<uint16_t> buffer_;
  std::vector<std::string> files_;
  uint64_t tokens_written_ = 0;
};

// Reports progress over the whole input (val and train together) in 10% steps.
class Progress {
 public:
  Progress(uint64_t total_bytes, bool enabled) : total_bytes_(total_bytes), enabled_(enabled) {}
  void advance(uint64_t bytes, uint64_t tokens) {
    done_bytes_ += bytes;
    done_tokens_ += tokens;
    if (!enabled_) return;
    int percent = int(100 * done_bytes_ / total_bytes_);
    if (percent / 10 > last_decile_) {
      last_decile_ = percent / 10;
      std::printf("prepare: %3d%%  %.1f of %.1f MB tokenized, %.2fM tokens\n", percent, done_bytes_ / 1e6,
                  total_bytes_ / 1e6, done_tokens_ / 1e6);
      std::fflush(stdout);
    }
  }

 private:
  uint64_t total_bytes_;
  bool enabled_;
  uint64_t done_bytes_ = 0, done_tokens_ = 0;
  int last_decile_ = 0;
};

// Tokenizes one split into shards; returns the files and the token count.
std::pair<std::vector<std::string>, uint64_t> write_split(std::string_view text, const std::string& prefix,
                                                          uint64_t shard_tokens, const Gpt2Tokenizer& tokenizer,
                                                          Progress& progress) {
  ShardWriter writer(prefix, shard_tokens, uint16_t(tokenizer.eot_token()));
  for (std::string_view piece : split_for_encoding(text, kEncodePieceBytes)) {
    std::vector<int> ids = tokenizer.encode(piece);
    writer.add(ids);
    progress.advance(piece.size(), ids.size());
  }
  writer.finish();
  return {writer.files(), writer.tokens_written()};
}

// True for "<name>_val_NNNNNN.bin" / "<name>_train_NNNNNN.bin": names a run of prepare writes.
bool is_prepared_shard_name(const std::string& file_name, const std::string& name) {
  for (const char* split : {"_val_", "_train_"}) {
    std::string head = name + split;
    if (file_name.size() != head.size() + 6 + 4 || file_name.compare(0, head.size(), head) != 0) continue;
    if (file_name.compare(file_name.size() - 4, 4, ".bin") != 0) continue;
    bool digits = true;
    for (size_t i = head.size(); i < head.size() + 6; ++i) digits = digits && file_name[i] >= '0' && file_name[i] <= '9';
    if (digits) return true;
  }
  return false;
}

void remove_stale_shards(const std::string& out_dir, const std::string& name,
                         const std::vector<std::string>& written) {
  std::set<std::string> keep;
  for (const std::string& file : written) keep.insert(fs::path(file).filename().string());
  std::vector<fs::path> stale;
  for (const fs::directory_entry& entry : fs::directory_iterator(out_dir)) {
    std::string file_name = entry.path().filename().string();
    if (entry.is_regular_file() && is_prepared_shard_name(file_name, name) && !keep.count(file_name))
      stale.push_back(entry.path());
  }
  for (const fs::path& path : stale) {
    std::printf("prepare: removing stale shard %s from an earlier run\n", path.c_str());
    fs::remove(path);
  }
}

}  // namespace

size_t find_invalid_utf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  auto continuation = [&](size_t at, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return at < n && bytes[at] >= lo && bytes[at] <= hi;
  };
  while (i < n) {
    unsigned char lead = bytes[i];
    size_t length;
    bool ok;
    if (lead < 0x80) {
      length = 1, ok = true;
    } else if (lead >= 0xC2 && lead <= 0xDF) {  // C0, C1 would be overlong
      length = 2, ok = continuation(i + 1);
    } else if (lead == 0xE0) {  // A0.. excludes overlong 3-byte forms
      length = 3, ok = continuation(i + 1, 0xA0) && continuation(i + 2);
    } else if (lead == 0xED) {  // ..9F excludes the UTF-16 surrogates D800-DFFF
      length = 3, ok = continuation(i + 1, 0x80, 0x9F) && continuation(i + 2);
    } else if (lead >= 0xE1 && lead <= 0xEF) {
      length = 3, ok = continuation(i + 1) && continuation(i + 2);
    } else if (lead == 0xF0) {  // 90.. excludes overlong 4-byte forms
      length = 4, ok = continuation(i + 1, 0x90) && continuation(i + 2) && continuation(i + 3);
    } else if (lead >= 0xF1 && lead <= 0xF3) {
      length = 4, ok = continuation(i + 1) && continuation(i + 2) && continuation(i + 3);
    } else if (lead == 0xF4) {  // ..8F stops at U+10FFFF
      length = 4, ok = continuation(i + 1, 0x80, 0x8F) && continuation(i + 2) && continuation(i + 3);
    } else {
      return i;
    }
    if (!ok) return i;
    i += length;
  }
  return std::string_view::npos;
}

std::vector<std::string_view> split_for_encoding(std::string_view text, size_t target_bytes) {
  auto solid = [](char c) { return c > ' ' && c < 0x7F; };  // printable ASCII, not a space
  std::vector<std::string_view> pieces;
  size_t start = 0;
  while (text.size() - start > target_bytes) {
    // The first safe point at or after start + target_bytes: text[cut - 1] == '\n' between two
    // solid characters.
    size_t cut = std::string_view::npos;
    for (size_t newline = text.find('\n', start + target_bytes - 1); newline != std::string_view::npos;
         newline = text.find('\n', newline + 1)) {
      if (newline > start && newline + 1 < text.size() && solid(text[newline - 1]) && solid(text[newline + 1])) {
        cut = newline + 1;
        break;
      }
    }
    if (cut == std::string_view::npos) break;
    pieces.push_back(text.substr(start, cut - start));
    start = cut;
  }
  if (start < text.size() || pieces.empty()) pieces.push_back(text.substr(start));
  return pieces;
}

PrepareResult prepare_text(const std::string& input_path, const std::string& out_dir, double val_fraction,
                           uint64_t shard_tokens, const std::string& tokenizer_dir) {
  if (!(val_fraction > 0.0 && val_fraction < 1.0))  // also rejects NaN
    throw UsageError(cat("val_fraction ", val_fraction, " is outside the range (0, 1): it is the fraction of the ",
                         "text used for validation, e.g. 0.1"));
  if (shard_tokens < 2 || shard_tokens > uint64_t(INT32_MAX))
    throw UsageError(cat("shard_tokens ", shard_tokens, " is outside [2, ", INT32_MAX,
                         "]: a shard holds its eot delimiter plus at least one token, and the llm.c "
                         "format counts tokens in an int32"));

  std::string file_text = read_whole_file(input_path);
  if (size_t bad = find_invalid_utf8(file_text); bad != std::string_view::npos) {
    char byte_hex[8];
    std::snprintf(byte_hex, sizeof(byte_hex), "0x%02X", unsigned(static_cast<unsigned char>(file_text[bad])));
    throw Error(cat("input '", input_path, "' is not valid UTF-8: byte ", byte_hex, " at byte offset ", bad,
                    " (line ", line_of(file_text, bad),
                    "). Convert it first, e.g. iconv -f latin1 -t utf-8 in.txt > in.utf8.txt"));
  }
  std::string_view text = file_text;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // a byte-order mark is not text
  if (text.empty()) throw Error(cat("input '", input_path, "' is empty: there is no text to tokenize"));

  size_t split = val_split_point(text, val_fraction, input_path);
  std::string_view val_text = text.substr(0, split);
  std::string_view train_text = text.substr(split);

  // Loaded after the cheap checks of the input, so a bad input fails fast and without it.
  Gpt2Tokenizer tokenizer = Gpt2Tokenizer::load(tokenizer_dir);
  // Shards store uint16 ids; the GPT-2 vocabulary (50257) fits.
  SLIM_CHECK(tokenizer.vocab_size() <= 65536, "vocab_size ", tokenizer.vocab_size(), " does not fit uint16 shards");

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error(cat("cannot create output directory '", out_dir, "': ", ec.message()));
  const std::string name = fs::path(input_path).stem().string();
  const std::string prefix = (fs::path(out_dir) / name).string();

  Progress progress(text.size(), text.size() >= kProgressMinBytes);
  auto [val_files, val_tokens] = write_split(val_text, prefix + "_val", shard_tokens, tokenizer, progress);
  auto [train_files, train_tokens] = write_split(train_text, prefix + "_train", shard_tokens, tokenizer, progress);

  PrepareResult result;
  result.val_tokens = val_tokens;
  result.train_tokens = train_tokens;
  result.files = val_files;
  result.files.insert(result.files.end(), train_files.begin(), train_files.end());
  remove_stale_shards(out_dir, name, result.files);
  return result;
}

}  // namespace slim
