// GPT-2's byte-level BPE tokenizer (the 50257-token vocabulary), encode and decode, in C++.
//
// It reads OpenAI's two files: encoder.json (token string -> id) and vocab.bpe (the 50000 merges,
// ranked by line). scripts/fetch_tokenizer.sh downloads them into data/tokenizer/.
//
// encode() reproduces GPT-2 exactly: text is split into pre-tokens by GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (matched by hand over UTF-8 code points, see tokenizer.cpp), then each pre-token's bytes are
// merged pairwise, lowest merge rank first, until no ranked pair is left.
//
// Special tokens: "<|endoftext|>" inside the text is encoded as ordinary text ("<", "|", "end",
// "of", "text", "|", ">"), never as the end-of-text id. Callers add the document separator
// themselves (ids.push_back(tok.eot_token())), so the corpus text can never forge one.
//
// Thread safety: a loaded tokenizer is immutable except for an internal word cache guarded by a
// mutex, so encode()/decode() may be called from several threads. Copies share tables and cache.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace slim {

class Gpt2Tokenizer {
 public:
  // Reads DIR/encoder.json and DIR/vocab.bpe. A missing or corrupt file throws slim::Error naming
  // the path (and line, for vocab.bpe) and suggesting scripts/fetch_tokenizer.sh.
  static Gpt2Tokenizer load(const std::string& dir);

  // UTF-8 text -> token ids. Bytes that are not valid UTF-8 are still encoded (byte-level BPE
  // covers every byte) and decode() gives them back unchanged.
  std::vector<int> encode(std::string_view text) const;

  // Token ids -> bytes. One token may hold part of a multi-byte UTF-8 character, so decoding a
  // slice of a sequence may give invalid UTF-8; decoding the whole sequence gives the text back.
  // An id outside [0, vocab_size()) throws slim::Error.
  std::string decode(const std::vector<int>& ids) const;
  std::string decode_token(int id) const;

  int eot_token() const;   // 50256, "<|endoftext|>"
  int vocab_size() const;  // 50257

 private:
  struct Tables;  // vocabulary, merges and word cache; defined in tokenizer.cpp
  explicit Gpt2Tokenizer(std::shared_ptr<Tables> tables) : tables_(std::move(tables)) {}
  std::shared_ptr<Tables> tables_;
};

// Where the tokenizer files live: $SLIMTRAIN_TOKENIZER_DIR if set and non-empty, else
// <source dir>/data/tokenizer (where scripts/fetch_tokenizer.sh puts them).
std::string default_tokenizer_dir();

}  // namespace slim
