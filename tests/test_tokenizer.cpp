// Tests of the GPT-2 tokenizer (src/data/tokenizer.h).
//
// The expected ids come from GPT-2's files through an independent implementation (a JavaScript
// regex pre-tokenizer plus a straightforward BPE), which agreed with ours on every string here,
// on the whole default corpus and on 20,000 random mixed-script strings. "Hello world!" ->
// [15496, 995, 0] is the reference from DESIGN.md. The BPE rules themselves (rank order, merging
// every occurrence) are also checked on a tiny hand-made vocabulary whose answers are known.
//
// Needs data/tokenizer/ (scripts/fetch_tokenizer.sh) and data/kjv/kjv.txt (scripts/setup.sh).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/tokenizer.h"
#include "util/error.h"

#ifndef SLIMTRAIN_SOURCE_DIR
#define SLIMTRAIN_SOURCE_DIR "."
#endif

namespace {

namespace fs = std::filesystem;
using slim::Gpt2Tokenizer;

// Loaded once for the whole binary: it takes about half a second. If the files are missing the
// exception (which names fetch_tokenizer.sh) fails every test that uses it.
const Gpt2Tokenizer& gpt2() {
  static const Gpt2Tokenizer tokenizer = Gpt2Tokenizer::load(slim::default_tokenizer_dir());
  return tokenizer;
}

// A scratch directory of our own, emptied first; tests may run in parallel processes.
fs::path scratch_dir(const std::string& name) {
#ifdef SLIMTRAIN_TEST_TMP
  fs::path dir = fs::path(SLIMTRAIN_TEST_TMP) / ("tokenizer_" + name);
#else
  fs::path dir = fs::temp_directory_path() / "slimtrain_test" / ("tokenizer_" + name);
#endif
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_file(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

std::string error_of_load(const std::string& dir) {
  try {
    Gpt2Tokenizer::load(dir);
  } catch (const slim::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Gpt2Tokenizer, VocabularyAndEndOfText) {
  EXPECT_EQ(gpt2().vocab_size(), 50257);
  EXPECT_EQ(gpt2().eot_token(), 50256);
  EXPECT_EQ(gpt2().decode({50256}), "<|endoftext|>");
  EXPECT_EQ(gpt2().decode_token(50256), "<|endoftext|>");
  EXPECT_EQ(gpt2().decode_token(262), " the");
  EXPECT_EQ(gpt2().decode_token(198), "\n");
}

TEST(Gpt2Tokenizer, KnownIds) {
  EXPECT_EQ(gpt2().encode("Hello world!"), (std::vector<int>{15496, 995, 0}));
  EXPECT_EQ(gpt2().encode(" the"), (std::vector<int>{262}));
  EXPECT_EQ(gpt2().encode(""), (std::vector<int>{}));
  // Contractions split off as their own pre-token.
  EXPECT_EQ(gpt2().encode("I'm"), (std::vector<int>{40, 1101}));
  EXPECT_EQ(gpt2().encode("don't"), (std::vector<int>{9099, 470}));
  EXPECT_EQ(gpt2().encode("it's 2024's"), (std::vector<int>{270, 338, 48609, 338}));
  // Only lower-case ASCII contractions count: "'D" and "'S" are punctuation then a letter, and
  // "''s" is a run of punctuation ("'" + "'") before "s".
  EXPECT_EQ(gpt2().encode("They'll've we'D 'sup ''s 'S"),
            (std::vector<int>{2990, 1183, 1053, 356, 6, 35, 705, 37330, 10148, 82, 705, 50}));
  // The special token in text is plain text: "<", "|", "end", "of", "text", "|", ">".
  EXPECT_EQ(gpt2().encode("<|endoftext|>"), (std::vector<int>{27, 91, 437, 1659, 5239, 91, 29}));
}

TEST(Gpt2Tokenizer, WhitespaceRuns) {
  // A run of spaces before a word leaves its last space to the word: "a", " ", " b", then
  // "\n\n" and " c".
  EXPECT_EQ(gpt2().encode("a  b\n\n c"), (std::vector<int>{64, 220, 275, 628, 269}));
  EXPECT_EQ(gpt2().encode("   leading and trailing spaces   "),
            (std::vector<int>{220, 220, 3756, 290, 25462, 9029, 220, 220, 220}));
  EXPECT_EQ(gpt2().encode("hello   world   "),
            (std::vector<int>{31373, 220, 220, 995, 220, 220, 220}));
  EXPECT_EQ(gpt2().encode("\n\n\n"), (std::vector<int>{628, 198}));
  EXPECT_EQ(gpt2().encode("a\tb"), (std::vector<int>{64, 197, 65}));
  // Non-ASCII whitespace (NBSP, ideographic space, em space) is \s too.
  EXPECT_EQ(gpt2().encode("no\u00a0break\u3000ideographic\u2003em"),
            (std::vector<int>{3919, 1849, 9032, 5099, 222, 485, 6826, 447, 225, 368}));
  for (const char* text : {"a  b\n\n c", "  ", " \n \n", "x \t\r\n y", "end  "})
    EXPECT_EQ(gpt2().decode(gpt2().encode(text)), text);
}

TEST(Gpt2Tokenizer, NumbersAndNonAscii) {
  EXPECT_EQ(gpt2().encode("1234567890 3.14159 1,000,000"),
            (std::vector<int>{10163, 2231, 30924, 3829, 513, 13, 1415, 19707, 352, 11, 830, 11,
                              830}));
  EXPECT_EQ(gpt2().encode("café naïve résumé"),
            (std::vector<int>{66, 1878, 2634, 41492, 40560, 16345, 2634}));
  // A combining accent is a mark, not a letter: it is split from "cafe", and it joins a
  // following apostrophe in one punctuation run, so "'s" is no contraction there.
  EXPECT_EQ(gpt2().encode("cafe\u0301"), (std::vector<int>{66, 8635, 136, 223}));
  EXPECT_EQ(gpt2().encode("Jose\u0301's car"), (std::vector<int>{23409, 136, 223, 6, 82, 1097}));
  EXPECT_EQ(gpt2().encode("你好，世界！"),
            (std::vector<int>{19526, 254, 25001, 121, 171, 120, 234, 10310, 244, 45911, 234, 171,
                              120, 223}));
  // Superscripts, fractions and Roman numerals are \p{N}; Hindi vowel signs are marks.
  EXPECT_EQ(gpt2().encode("x² + y³ = z⁴, ½ and Ⅻ"),
            (std::vector<int>{87, 31185, 1343, 331, 126, 111, 796, 1976, 46256, 112, 11, 25208,
                              290, 2343, 227, 104}));
  EXPECT_EQ(gpt2().encode("नमस्ते दुनिया"),
            (std::vector<int>{11976, 101, 11976, 106, 11976, 116, 24231, 235, 11976, 97, 24231,
                              229, 28225, 99, 24231, 223, 11976, 101, 11976, 123, 11976, 107,
                              48077}));
  EXPECT_EQ(gpt2().encode("Привет, мир!"),
            (std::vector<int>{140, 253, 21169, 18849, 38857, 16843, 20375, 11, 12466, 120, 18849,
                              21169, 0}));
}

TEST(Gpt2Tokenizer, RoundTripsAnyText) {
  const std::vector<std::string> texts = {
      "Γειά σου Κόσμε", "こんにちは世界、カタカナ", "안녕하세요", "สวัสดีครับ", "مرحبا بالعالم",
      "👋🌍 emoji 👨‍👩‍👧 family", "ÀÉÎÕÜ ßæøå ŁŒŠŽ", "“quotes” ‘single’ — dash … ellipsis",
      "    def foo(x):\n        return x  # comment\n", "３２１ ｆｕｌｌｗｉｄｔｈ",
      "nel\u0085next bom\ufeffhere x\u2028y"};
  for (const std::string& text : texts) EXPECT_EQ(gpt2().decode(gpt2().encode(text)), text);

  // Not UTF-8 at all: stray bytes, a truncated character, an overlong form, a UTF-16 surrogate,
  // and every byte value once. Byte-level BPE covers all of them.
  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte.push_back(static_cast<char>(b));
  for (const std::string& bytes :
       {std::string("\xff\xfe abc \xc3"), std::string("\x80\x80 x\xc0\xaf"),
        std::string("\xed\xa0\x80 \xf4\x90\x80\x80 's"), every_byte})
    EXPECT_EQ(gpt2().decode(gpt2().encode(bytes)), bytes);
}

TEST(Gpt2Tokenizer, RejectsIdsOutsideTheVocabulary) {
  EXPECT_THROW(gpt2().decode_token(-1), slim::Error);
  EXPECT_THROW(gpt2().decode_token(50257), slim::Error);
  try {
    gpt2().decode({15496, 70000});
    FAIL() << "decode accepted id 70000";
  } catch (const slim::Error& e) {
    EXPECT_NE(std::string(e.what()).find("70000 at position 1"), std::string::npos) << e.what();
  }
}

TEST(Gpt2Tokenizer, SharedCacheIsThreadSafe) {
  // A fresh tokenizer, so both threads fill the word cache at the same time.
  const Gpt2Tokenizer fresh = Gpt2Tokenizer::load(slim::default_tokenizer_dir());
  std::string text;
  for (int i = 0; i < 300; ++i)
    text += "In the beginning " + std::to_string(i * 7919) + " word" + std::to_string(i) + "s. ";
  const std::vector<int> expected = gpt2().encode(text);
  std::vector<int> results[2];
  std::thread first([&] { results[0] = fresh.encode(text); });
  std::thread second([&] { results[1] = fresh.encode(text); });
  first.join();
  second.join();
  EXPECT_EQ(results[0], expected);
  EXPECT_EQ(results[1], expected);
}

TEST(Gpt2Tokenizer, WholeCorpusRoundTrips) {
  const std::string path = SLIMTRAIN_SOURCE_DIR "/data/kjv/kjv.txt";
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << "the default corpus " << path
                  << " is missing; run scripts/setup.sh to create it";
  std::stringstream contents;
  contents << in.rdbuf();
  const std::string text = contents.str();
  ASSERT_GT(text.size(), 1000000u) << path << " looks truncated; run scripts/setup.sh again";

  const auto start = std::chrono::steady_clock::now();
  const std::vector<int> ids = gpt2().encode(text);
  const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
  std::printf("encoded %zu bytes into %zu tokens in %.2f s\n", text.size(), ids.size(),
              seconds.count());

  // ~1.03M for the King James Bible; a far-off count means text or tokenizer went wrong.
  EXPECT_GE(ids.size(), 900000u);
  EXPECT_LE(ids.size(), 1200000u);
  EXPECT_TRUE(gpt2().decode(ids) == text) << "decode(encode(kjv.txt)) differs from kjv.txt";
}

TEST(Gpt2TokenizerFiles, MissingDirectoryNamesTheFetchScript) {
  const std::string dir = "/nonexistent/slimtrain/tokenizer";
  const std::string message = error_of_load(dir);
  EXPECT_NE(message.find(dir + "/encoder.json"), std::string::npos) << message;
  EXPECT_NE(message.find("scripts/fetch_tokenizer.sh"), std::string::npos) << message;
}

TEST(Gpt2TokenizerFiles, DefaultDirectoryFollowsTheEnvironment) {
  const char* saved = std::getenv("SLIMTRAIN_TOKENIZER_DIR");
  const std::string saved_value = saved ? saved : "";
  setenv("SLIMTRAIN_TOKENIZER_DIR", "/somewhere/else", 1);
  EXPECT_EQ(slim::default_tokenizer_dir(), "/somewhere/else");
  unsetenv("SLIMTRAIN_TOKENIZER_DIR");
  EXPECT_EQ(slim::default_tokenizer_dir(), SLIMTRAIN_SOURCE_DIR "/data/tokenizer");
  if (saved) setenv("SLIMTRAIN_TOKENIZER_DIR", saved_value.c_str(), 1);
}

// ------------------------------------------------------------------------------------------------
// A tiny hand-made vocabulary: the 256 byte tokens, a few merges, and the end-of-text token.
// ------------------------------------------------------------------------------------------------

// How GPT-2's files spell one byte: printable Latin-1 stands for itself, the other 68 bytes
// are U+0100 onwards in byte order (so ' ' is 'Ġ'). Returned as UTF-8.
std::string spell_byte(int byte) {
  int code_point = byte;
  const auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  };
  if (!printable(byte)) {
    code_point = 256;
    for (int b = 0; b < byte; ++b) code_point += printable(b) ? 0 : 1;
  }
  std::string utf8;
  if (code_point < 0x80) {
    utf8.push_back(static_cast<char>(code_point));
  } else {
    utf8.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    utf8.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
  return utf8;
}

std::string spell(const std::string& bytes) {
  std::string spelling;
  for (unsigned char b : bytes) spelling += spell_byte(b);
  return spelling;
}

// Writes encoder.json with byte tokens 0..255 (id = byte value), then `merged` tokens in order,
// then "<|endoftext|>"; and vocab.bpe with `merges` ("left right" in raw bytes, best first).
void write_tiny_vocab(const fs::path& dir, const std::vector<std::string>& merged,
                      const std::vector<std::pair<std::string, std::string>>& merges) {
  std::string json = "{";
  int id = 0;
  const auto add = [&](const std::string& spelling) {
    std::string escaped;
    for (char c : spelling) {
      if (c == '"' || c == '\\') escaped.push_back('\\');
      escaped.push_back(c);
    }
    json += (id == 0 ? "\"" : ", \"") + escaped + "\": " + std::to_string(id);
    ++id;
  };
  for (int b = 0; b < 256; ++b) add(spell_byte(b));
  for (const std::string& token : merged) add(spell(token));
  add("<|endoftext|>");
  json += "}";
  write_file(dir / "encoder.json", json);
  std::string bpe = "#version: 0.2\n";
  for (const auto& [left, right] : merges) bpe += spell(left) + " " + spell(right) + "\n";
  write_file(dir / "vocab.bpe", bpe);
}

TEST(Gpt2TokenizerBpe, LowestRankMergesFirst) {
  const fs::path dir = scratch_dir("rank");
  // ids: "bc" 256, "ab" 257, "abc" 258, eot 259.
  write_tiny_vocab(dir, {"bc", "ab", "abc"}, {{"b", "c"}, {"a", "b"}, {"a", "bc"}});
  const Gpt2Tokenizer tiny = Gpt2Tokenizer::load(dir.string());
  EXPECT_EQ(tiny.vocab_size(), 260);
  EXPECT_EQ(tiny.eot_token(), 259);
  // (b,c) outranks (a,b), so "abc" is b+c, then a+bc.
  EXPECT_EQ(tiny.encode("abc"), (std::vector<int>{258}));
  EXPECT_EQ(tiny.encode("ab"), (std::vector<int>{257}));
  EXPECT_EQ(tiny.encode("abd"), (std::vector<int>{257, 'd'}));

  // With (a,b) first, "abc" becomes ab + c and stops: there is no (ab, c) merge.
  const fs::path other = scratch_dir("rank_reversed");
  write_tiny_vocab(other, {"ab", "bc"}, {{"a", "b"}, {"b", "c"}});
  EXPECT_EQ(Gpt2Tokenizer::load(other.string()).encode("abc"), (std::vector<int>{256, 'c'}));
}

TEST(Gpt2TokenizerBpe, MergesEveryOccurrenceLeftToRight) {
  const fs::path dir = scratch_dir("occurrences");
  // ids: "aa" 256, "aaaa" 257.
  write_tiny_vocab(dir, {"aa", "aaaa"}, {{"a", "a"}, {"aa", "aa"}});
  const Gpt2Tokenizer tiny = Gpt2Tokenizer::load(dir.string());
  EXPECT_EQ(tiny.encode("aaa"), (std::vector<int>{256, 'a'}));
  EXPECT_EQ(tiny.encode("aaaaa"), (std::vector<int>{257, 'a'}));
  EXPECT_EQ(tiny.encode("aaaaaa"), (std::vector<int>{257, 256}));
  // Spaces are bytes like any other and attach to the following word.
  EXPECT_EQ(tiny.encode("aa aa"), (std::vector<int>{256, ' ', 256}));
}

TEST(Gpt2TokenizerFiles, CorruptFilesAreNamed) {
  const fs::path dir = scratch_dir("corrupt");
  write_tiny_vocab(dir, {"ab"}, {{"a", "b"}});
  ASSERT_NO_THROW(Gpt2Tokenizer::load(dir.string()));

  // Truncated JSON.
  write_file(dir / "encoder.json", "{\"a\": 0, \"b\"");
  std::string message = error_of_load(dir.string());
  EXPECT_NE(message.find("encoder.json is not valid JSON"), std::string::npos) << message;
  EXPECT_NE(message.find("fetch_tokenizer.sh"), std::string::npos) << message;

  // A merge line with three fields, on line 3.
  write_tiny_vocab(dir, {"ab"}, {{"a", "b"}});
  write_file(dir / "vocab.bpe", "#version: 0.2\na b\na b c\n");
  message = error_of_load(dir.string());
  EXPECT_NE(message.find("vocab.bpe:3:"), std::string::npos) << message;

  // A merge whose result is not in encoder.json: the files belong to different vocabularies.
  write_file(dir / "vocab.bpe", "#version: 0.2\na b\nb c\n");
  message = error_of_load(dir.string());
  EXPECT_NE(message.find("vocab.bpe:3:"), std::string::npos) << message;
  EXPECT_NE(message.find("do not match"), std::string::npos) << message;

  // An encoder without the byte tokens cannot encode arbitrary text.
  write_file(dir / "encoder.json", "{\"a\": 0, \"<|endoftext|>\": 1}");
  message = error_of_load(dir.string());
  EXPECT_NE(message.find("has no token for byte 0"), std::string::npos) << message;
}

}  // namespace
