// Text -> token shards: what `slimtrain prepare` does. A UTF-8 text file is tokenized with the
// GPT-2 tokenizer and written as llm.c-format shards (see shard.h), a validation split first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace slim {

struct PrepareResult {
  uint64_t train_tokens, val_tokens;  // tokens written, eot delimiters included
  std::vector<std::string> files;     // val shards then train shards, in order
};

// Tokenizes the UTF-8 text file `input_path` and writes
//   OUT_DIR/<name>_val_000000.bin, then OUT_DIR/<name>_train_000000.bin, _000001, ...
// where <name> is the input's file name without its extension. The validation split is the first
// val_fraction of the text's bytes, moved forward to the next line boundary (the way llm.c's
// tinyshakespeare puts val first). A split is cut into shards of at most shard_tokens tokens;
// every shard starts with the end-of-text token (50256) as a document delimiter, so a model never
// sees a shard's first token without context marking it as a start.
// Shards left over from an earlier run with the same <name> (e.g. train_000007 when this run
// writes fewer) are deleted, so a glob over the directory sees only this run's data.
// A UTF-8 byte-order mark at the start is skipped. Prints progress for inputs of 10 MB or more.
// Errors: missing/unreadable input, invalid UTF-8 (with the byte offset), empty text, text that
// cannot be split at a line boundary -> Error; val_fraction outside (0, 1) or shard_tokens
// outside [2, 2^31 - 1] -> UsageError.
PrepareResult prepare_text(const std::string& input_path, const std::string& out_dir, double val_fraction,
                           uint64_t shard_tokens, const std::string& tokenizer_dir);

// The byte offset of the first byte that does not start a well-formed UTF-8 sequence (overlong
// forms, surrogates and code points above U+10FFFF are ill-formed), or npos if the text is valid.
size_t find_invalid_utf8(std::string_view text);

// Cuts text into consecutive pieces of roughly target_bytes, only right after a '\n' that sits
// between two printable non-space ASCII characters. GPT-2's pre-tokenizer never joins text across
// such a point, so encoding the pieces one by one gives exactly the tokens of encoding the whole
// text, while holding only one piece's intermediate data and allowing progress reports.
// Text with no such point stays one piece. The pieces concatenate to the text.
std::vector<std::string_view> split_for_encoding(std::string_view text, size_t target_bytes);

}  // namespace slim
