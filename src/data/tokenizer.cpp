// GPT-2 byte-level BPE: loading encoder.json + vocab.bpe, the pre-tokenizer, merging, decoding.
//
// Layout of this file:
//   1. Unicode classes: letter / number / whitespace / other for every code point, which the
//      pre-tokenizer pattern needs (\p{L}, \p{N}, \s).
//   2. UTF-8 decoding and the pre-tokenizer, a hand-written matcher of GPT-2's pattern.
//   3. GPT-2's byte <-> printable-code-point mapping and the file loaders.
//   4. BPE merging with a word cache, encode() and decode().
#include "data/tokenizer.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "util/error.h"

#ifndef SLIMTRAIN_SOURCE_DIR
#define SLIMTRAIN_SOURCE_DIR "."  // CMake defines it; "." keeps direct g++ builds working
#endif

namespace slim {
namespace {

// ------------------------------------------------------------------------------------------------
// 1. Unicode classes
// ------------------------------------------------------------------------------------------------

// The four classes GPT-2's pattern distinguishes. kOther is everything in [^\s\p{L}\p{N}]:
// punctuation, symbols, emoji, combining marks, control characters, unassigned code points.
enum class CharClass : uint8_t { kOther, kLetter, kNumber, kSpace };

struct CodeRange {
  char32_t first, last;  // inclusive
  CharClass cls;
};

constexpr CharClass L = CharClass::kLetter;  // short names keep the table below readable
constexpr CharClass N = CharClass::kNumber;

// Every non-ASCII code point whose general category is a letter (Lu Ll Lt Lm Lo: \p{L}) or a
// number (Nd Nl No: \p{N}), as maximal ranges, sorted, from Unicode 17.0. The table is exact
// rather than a block-level guess because ~830 ranges is small, and guesses go wrong where GPT-2's
// splits are most visible: Indic and Thai vowel signs and Hebrew and Arabic vowel points are
// marks (\p{M}), not letters, so GPT-2 cuts words at them.
// Regenerate with this node one-liner (join the lines; node's ICU knows the categories):
//   node -e 'const k=c=>{const s=String.fromCodePoint(c);return /\p{L}/u.test(s)?"L":
//     /\p{N}/u.test(s)?"N":""};let o=[],s=0,p="";for(let c=128;c<=0x110000;c++){const q=
//     c<0x110000?k(c):"";if(q!==p){if(p)o.push(`{0x${s.toString(16).toUpperCase()},0x${
//     (c-1).toString(16).toUpperCase()},${p}}`);s=c;p=q}}console.log(o.join(", "))'
// GPT-2's encoder.py used an older Unicode version; the two differ only on code points assigned
// since, which are rare in any text.
constexpr CodeRange kLetterAndNumberRanges[] = {
    {0xAA,0xAA,L}, {0xB2,0xB3,N}, {0xB5,0xB5,L}, {0xB9,0xB9,N}, {0xBA,0xBA,L}, {0xBC,0xBE,N},
    {0xC0,0xD6,L}, {0xD8,0xF6,L}, {0xF8,0x2C1,L}, {0x2C6,0x2D1,L}, {0x2E0,0x2E4,L}, {0x2EC,0x2EC,L},
    {0x2EE,0x2EE,L}, {0x370,0x374,L}, {0x376,0x377,L}, {0x37A,0x37D,L}, {0x37F,0x37F,L},
    {0x386,0x386,L}, {0x388,0x38A,L}, {0x38C,0x38C,L}, {0x38E,0x3A1,L}, {0x3A3,0x3F5,L},
    {0x3F7,0x481,L}, {0x48A,0x52F,L}, {0x531,0x556,L}, {0x559,0x559,L}, {0x560,0x588,L},
    {0x5D0,0x5EA,L}, {0x5EF,0x5F2,L}, {0x620,0x64A,L}, {0x660,0x669,N}, {0x66E,0x66F,L},
    {0x671,0x6D3,L}, {0x6D5,0x6D5,L}, {0x6E5,0x6E6,L}, {0x6EE,0x6EF,L}, {0x6F0,0x6F9,N},
    {0x6FA,0x6FC,L}, {0x6FF,0x6FF,L}, {0x710,0x710,L}, {0x712,0x72F,L}, {0x74D,0x7A5,L},
    {0x7B1,0x7B1,L}, {0x7C0,0x7C9,N}, {0x7CA,0x7EA,L}, {0x7F4,0x7F5,L}, {0x7FA,0x7FA,L},
    {0x800,0x815,L}, {0x81A,0x81A,L}, {0x824,0x824,L}, {0x828,0x828,L}, {0x840,0x858,L},
    {0x860,0x86A,L}, {0x870,0x887,L}, {0x889,0x88F,L}, {0x8A0,0x8C9,L}, {0x904,0x939,L},
    {0x93D,0x93D,L}, {0x950,0x950,L}, {0x958,0x961,L}, {0x966,0x96F,N}, {0x971,0x980,L},
    {0x985,0x98C,L}, {0x98F,0x990,L}, {0x993,0x9A8,L}, {0x9AA,0x9B0,L}, {0x9B2,0x9B2,L},
    {0x9B6,0x9B9,L}, {0x9BD,0x9BD,L}, {0x9CE,0x9CE,L}, {0x9DC,0x9DD,L}, {0x9DF,0x9E1,L},
    {0x9E6,0x9EF,N}, {0x9F0,0x9F1,L}, {0x9F4,0x9F9,N}, {0x9FC,0x9FC,L}, {0xA05,0xA0A,L},
    {0xA0F,0xA10,L}, {0xA13,0xA28,L}, {0xA2A,0xA30,L}, {0xA32,0xA33,L}, {0xA35,0xA36,L},
    {0xA38,0xA39,L}, {0xA59,0xA5C,L}, {0xA5E,0xA5E,L}, {0xA66,0xA6F,N}, {0xA72,0xA74,L},
    {0xA85,0xA8D,L}, {0xA8F,0xA91,L}, {0xA93,0xAA8,L}, {0xAAA,0xAB0,L}, {0xAB2,0xAB3,L},
    {0xAB5,0xAB9,L}, {0xABD,0xABD,L}, {0xAD0,0xAD0,L}, {0xAE0,0xAE1,L}, {0xAE6,0xAEF,N},
    {0xAF9,0xAF9,L}, {0xB05,0xB0C,L}, {0xB0F,0xB10,L}, {0xB13,0xB28,L}, {0xB2A,0xB30,L},
    {0xB32,0xB33,L}, {0xB35,0xB39,L}, {0xB3D,0xB3D,L}, {0xB5C,0xB5D,L}, {0xB5F,0xB61,L},
    {0xB66,0xB6F,N}, {0xB71,0xB71,L}, {0xB72,0xB77,N}, {0xB83,0xB83,L}, {0xB85,0xB8A,L},
    {0xB8E,0xB90,L}, {0xB92,0xB95,L}, {0xB99,0xB9A,L}, {0xB9C,0xB9C,L}, {0xB9E,0xB9F,L},
    {0xBA3,0xBA4,L}, {0xBA8,0xBAA,L}, {0xBAE,0xBB9,L}, {0xBD0,0xBD0,L}, {0xBE6,0xBF2,N},
    {0xC05,0xC0C,L}, {0xC0E,0xC10,L}, {0xC12,0xC28,L}, {0xC2A,0xC39,L}, {0xC3D,0xC3D,L},
    {0xC58,0xC5A,L}, {0xC5C,0xC5D,L}, {0xC60,0xC61,L}, {0xC66,0xC6F,N}, {0xC78,0xC7E,N},
    {0xC80,0xC80,L}, {0xC85,0xC8C,L}, {0xC8E,0xC90,L}, {0xC92,0xCA8,L}, {0xCAA,0xCB3,L},
    {0xCB5,0xCB9,L}, {0xCBD,0xCBD,L}, {0xCDC,0xCDE,L}, {0xCE0,0xCE1,L}, {0xCE6,0xCEF,N},
    {0xCF1,0xCF2,L}, {0xD04,0xD0C,L}, {0xD0E,0xD10,L}, {0xD12,0xD3A,L}, {0xD3D,0xD3D,L},
    {0xD4E,0xD4E,L}, {0xD54,0xD56,L}, {0xD58,0xD5E,N}, {0xD5F,0xD61,L}, {0xD66,0xD78,N},
    {0xD7A,0xD7F,L}, {0xD85,0xD96,L}, {0xD9A,0xDB1,L}, {0xDB3,0xDBB,L}, {0xDBD,0xDBD,L},
    {0xDC0,0xDC6,L}, {0xDE6,0xDEF,N}, {0xE01,0xE30,L}, {0xE32,0xE33,L}, {0xE40,0xE46,L},
    {0xE50,0xE59,N}, {0xE81,0xE82,L}, {0xE84,0xE84,L}, {0xE86,0xE8A,L}, {0xE8C,0xEA3,L},
    {0xEA5,0xEA5,L}, {0xEA7,0xEB0,L}, {0xEB2,0xEB3,L}, {0xEBD,0xEBD,L}, {0xEC0,0xEC4,L},
    {0xEC6,0xEC6,L}, {0xED0,0xED9,N}, {0xEDC,0xEDF,L}, {0xF00,0xF00,L}, {0xF20,0xF33,N},
    {0xF40,0xF47,L}, {0xF49,0xF6C,L}, {0xF88,0xF8C,L}, {0x1000,0x102A,L}, {0x103F,0x103F,L},
    {0x1040,0x1049,N}, {0x1050,0x1055,L}, {0x105A,0x105D,L}, {0x1061,0x1061,L}, {0x1065,0x1066,L},
    {0x106E,0x1070,L}, {0x1075,0x1081,L}, {0x108E,0x108E,L}, {0x1090,0x1099,N}, {0x10A0,0x10C5,L},
    {0x10C7,0x10C7,L}, {0x10CD,0x10CD,L}, {0x10D0,0x10FA,L}, {0x10FC,0x1248,L}, {0x124A,0x124D,L},
    {0x1250,0x1256,L}, {0x1258,0x1258,L}, {0x125A,0x125D,L}, {0x1260,0x1288,L}, {0x128A,0x128D,L},
    {0x1290,0x12B0,L}, {0x12B2,0x12B5,L}, {0x12B8,0x12BE,L}, {0x12C0,0x12C0,L}, {0x12C2,0x12C5,L},
    {0x12C8,0x12D6,L}, {0x12D8,0x1310,L}, {0x1312,0x1315,L}, {0x1318,0x135A,L}, {0x1369,0x137C,N},
    {0x1380,0x138F,L}, {0x13A0,0x13F5,L}, {0x13F8,0x13FD,L}, {0x1401,0x166C,L}, {0x166F,0x167F,L},
    {0x1681,0x169A,L}, {0x16A0,0x16EA,L}, {0x16EE,0x16F0,N}, {0x16F1,0x16F8,L}, {0x1700,0x1711,L},
    {0x171F,0x1731,L}, {0x1740,0x1751,L}, {0x1760,0x176C,L}, {0x176E,0x1770,L}, {0x1780,0x17B3,L},
    {0x17D7,0x17D7,L}, {0x17DC,0x17DC,L}, {0x17E0,0x17E9,N}, {0x17F0,0x17F9,N}, {0x1810,0x1819,N},
    {0x1820,0x1878,L}, {0x1880,0x1884,L}, {0x1887,0x18A8,L}, {0x18AA,0x18AA,L}, {0x18B0,0x18F5,L},
    {0x1900,0x191E,L}, {0x1946,0x194F,N}, {0x1950,0x196D,L}, {0x1970,0x1974,L}, {0x1980,0x19AB,L},
    {0x19B0,0x19C9,L}, {0x19D0,0x19DA,N}, {0x1A00,0x1A16,L}, {0x1A20,0x1A54,L}, {0x1A80,0x1A89,N},
    {0x1A90,0x1A99,N}, {0x1AA7,0x1AA7,L}, {0x1B05,0x1B33,L}, {0x1B45,0x1B4C,L}, {0x1B50,0x1B59,N},
    {0x1B83,0x1BA0,L}, {0x1BAE,0x1BAF,L}, {0x1BB0,0x1BB9,N}, {0x1BBA,0x1BE5,L}, {0x1C00,0x1C23,L},
    {0x1C40,0x1C49,N}, {0x1C4D,0x1C4F,L}, {0x1C50,0x1C59,N}, {0x1C5A,0x1C7D,L}, {0x1C80,0x1C8A,L},
    {0x1C90,0x1CBA,L}, {0x1CBD,0x1CBF,L}, {0x1CE9,0x1CEC,L}, {0x1CEE,0x1CF3,L}, {0x1CF5,0x1CF6,L},
    {0x1CFA,0x1CFA,L}, {0x1D00,0x1DBF,L}, {0x1E00,0x1F15,L}, {0x1F18,0x1F1D,L}, {0x1F20,0x1F45,L},
    {0x1F48,0x1F4D,L}, {0x1F50,0x1F57,L}, {0x1F59,0x1F59,L}, {0x1F5B,0x1F5B,L}, {0x1F5D,0x1F5D,L},
    {0x1F5F,0x1F7D,L}, {0x1F80,0x1FB4,L}, {0x1FB6,0x1FBC,L}, {0x1FBE,0x1FBE,L}, {0x1FC2,0x1FC4,L},
    {0x1FC6,0x1FCC,L}, {0x1FD0,0x1FD3,L}, {0x1FD6,0x1FDB,L}, {0x1FE0,0x1FEC,L}, {0x1FF2,0x1FF4,L},
    {0x1FF6,0x1FFC,L}, {0x2070,0x2070,N}, {0x2071,0x2071,L}, {0x2074,0x2079,N}, {0x207F,0x207F,L},
    {0x2080,0x2089,N}, {0x2090,0x209C,L}, {0x2102,0x2102,L}, {0x2107,0x2107,L}, {0x210A,0x2113,L},
    {0x2115,0x2115,L}, {0x2119,0x211D,L}, {0x2124,0x2124,L}, {0x2126,0x2126,L}, {0x2128,0x2128,L},
    {0x212A,0x212D,L}, {0x212F,0x2139,L}, {0x213C,0x213F,L}, {0x2145,0x2149,L}, {0x214E,0x214E,L},
    {0x2150,0x2182,N}, {0x2183,0x2184,L}, {0x2185,0x2189,N}, {0x2460,0x249B,N}, {0x24EA,0x24FF,N},
    {0x2776,0x2793,N}, {0x2C00,0x2CE4,L}, {0x2CEB,0x2CEE,L}, {0x2CF2,0x2CF3,L}, {0x2CFD,0x2CFD,N},
    {0x2D00,0x2D25,L}, {0x2D27,0x2D27,L}, {0x2D2D,0x2D2D,L}, {0x2D30,0x2D67,L}, {0x2D6F,0x2D6F,L},
    {0x2D80,0x2D96,L}, {0x2DA0,0x2DA6,L}, {0x2DA8,0x2DAE,L}, {0x2DB0,0x2DB6,L}, {0x2DB8,0x2DBE,L},
    {0x2DC0,0x2DC6,L}, {0x2DC8,0x2DCE,L}, {0x2DD0,0x2DD6,L}, {0x2DD8,0x2DDE,L}, {0x2E2F,0x2E2F,L},
    {0x3005,0x3006,L}, {0x3007,0x3007,N}, {0x3021,0x3029,N}, {0x3031,0x3035,L}, {0x3038,0x303A,N},
    {0x303B,0x303C,L}, {0x3041,0x3096,L}, {0x309D,0x309F,L}, {0x30A1,0x30FA,L}, {0x30FC,0x30FF,L},
    {0x3105,0x312F,L}, {0x3131,0x318E,L}, {0x3192,0x3195,N}, {0x31A0,0x31BF,L}, {0x31F0,0x31FF,L},
    {0x3220,0x3229,N}, {0x3248,0x324F,N}, {0x3251,0x325F,N}, {0x3280,0x3289,N}, {0x32B1,0x32BF,N},
    {0x3400,0x4DBF,L}, {0x4E00,0xA48C,L}, {0xA4D0,0xA4FD,L}, {0xA500,0xA60C,L}, {0xA610,0xA61F,L},
    {0xA620,0xA629,N}, {0xA62A,0xA62B,L}, {0xA640,0xA66E,L}, {0xA67F,0xA69D,L}, {0xA6A0,0xA6E5,L},
    {0xA6E6,0xA6EF,N}, {0xA717,0xA71F,L}, {0xA722,0xA788,L}, {0xA78B,0xA7DC,L}, {0xA7F1,0xA801,L},
    {0xA803,0xA805,L}, {0xA807,0xA80A,L}, {0xA80C,0xA822,L}, {0xA830,0xA835,N}, {0xA840,0xA873,L},
    {0xA882,0xA8B3,L}, {0xA8D0,0xA8D9,N}, {0xA8F2,0xA8F7,L}, {0xA8FB,0xA8FB,L}, {0xA8FD,0xA8FE,L},
    {0xA900,0xA909,N}, {0xA90A,0xA925,L}, {0xA930,0xA946,L}, {0xA960,0xA97C,L}, {0xA984,0xA9B2,L},
    {0xA9CF,0xA9CF,L}, {0xA9D0,0xA9D9,N}, {0xA9E0,0xA9E4,L}, {0xA9E6,0xA9EF,L}, {0xA9F0,0xA9F9,N},
    {0xA9FA,0xA9FE,L}, {0xAA00,0xAA28,L}, {0xAA40,0xAA42,L}, {0xAA44,0xAA4B,L}, {0xAA50,0xAA59,N},
    {0xAA60,0xAA76,L}, {0xAA7A,0xAA7A,L}, {0xAA7E,0xAAAF,L}, {0xAAB1,0xAAB1,L}, {0xAAB5,0xAAB6,L},
    {0xAAB9,0xAABD,L}, {0xAAC0,0xAAC0,L}, {0xAAC2,0xAAC2,L}, {0xAADB,0xAADD,L}, {0xAAE0,0xAAEA,L},
    {0xAAF2,0xAAF4,L}, {0xAB01,0xAB06,L}, {0xAB09,0xAB0E,L}, {0xAB11,0xAB16,L}, {0xAB20,0xAB26,L},
    {0xAB28,0xAB2E,L}, {0xAB30,0xAB5A,L}, {0xAB5C,0xAB69,L}, {0xAB70,0xABE2,L}, {0xABF0,0xABF9,N},
    {0xAC00,0xD7A3,L}, {0xD7B0,0xD7C6,L}, {0xD7CB,0xD7FB,L}, {0xF900,0xFA6D,L}, {0xFA70,0xFAD9,L},
    {0xFB00,0xFB06,L}, {0xFB13,0xFB17,L}, {0xFB1D,0xFB1D,L}, {0xFB1F,0xFB28,L}, {0xFB2A,0xFB36,L},
    {0xFB38,0xFB3C,L}, {0xFB3E,0xFB3E,L}, {0xFB40,0xFB41,L}, {0xFB43,0xFB44,L}, {0xFB46,0xFBB1,L},
    {0xFBD3,0xFD3D,L}, {0xFD50,0xFD8F,L}, {0xFD92,0xFDC7,L}, {0xFDF0,0xFDFB,L}, {0xFE70,0xFE74,L},
    {0xFE76,0xFEFC,L}, {0xFF10,0xFF19,N}, {0xFF21,0xFF3A,L}, {0xFF41,0xFF5A,L}, {0xFF66,0xFFBE,L},
    {0xFFC2,0xFFC7,L}, {0xFFCA,0xFFCF,L}, {0xFFD2,0xFFD7,L}, {0xFFDA,0xFFDC,L}, {0x10000,0x1000B,L},
    {0x1000D,0x10026,L}, {0x10028,0x1003A,L}, {0x1003C,0x1003D,L}, {0x1003F,0x1004D,L},
    {0x10050,0x1005D,L}, {0x10080,0x100FA,L}, {0x10107,0x10133,N}, {0x10140,0x10178,N},
    {0x1018A,0x1018B,N}, {0x10280,0x1029C,L}, {0x102A0,0x102D0,L}, {0x102E1,0x102FB,N},
    {0x10300,0x1031F,L}, {0x10320,0x10323,N}, {0x1032D,0x10340,L}, {0x10341,0x10341,N},
    {0x10342,0x10349,L}, {0x1034A,0x1034A,N}, {0x10350,0x10375,L}, {0x10380,0x1039D,L},
    {0x103A0,0x103C3,L}, {0x103C8,0x103CF,L}, {0x103D1,0x103D5,N}, {0x10400,0x1049D,L},
    {0x104A0,0x104A9,N}, {0x104B0,0x104D3,L}, {0x104D8,0x104FB,L}, {0x10500,0x10527,L},
    {0x10530,0x10563,L}, {0x10570,0x1057A,L}, {0x1057C,0x1058A,L}, {0x1058C,0x10592,L},
    {0x10594,0x10595,L}, {0x10597,0x105A1,L}, {0x105A3,0x105B1,L}, {0x105B3,0x105B9,L},
    {0x105BB,0x105BC,L}, {0x105C0,0x105F3,L}, {0x10600,0x10736,L}, {0x10740,0x10755,L},
    {0x10760,0x10767,L}, {0x10780,0x10785,L}, {0x10787,0x107B0,L}, {0x107B2,0x107BA,L},
    {0x10800,0x10805,L}, {0x10808,0x10808,L}, {0x1080A,0x10835,L}, {0x10837,0x10838,L},
    {0x1083C,0x1083C,L}, {0x1083F,0x10855,L}, {0x10858,0x1085F,N}, {0x10860,0x10876,L},
    {0x10879,0x1087F,N}, {0x10880,0x1089E,L}, {0x108A7,0x108AF,N}, {0x108E0,0x108F2,L},
    {0x108F4,0x108F5,L}, {0x108FB,0x108FF,N}, {0x10900,0x10915,L}, {0x10916,0x1091B,N},
    {0x10920,0x10939,L}, {0x10940,0x10959,L}, {0x10980,0x109B7,L}, {0x109BC,0x109BD,N},
    {0x109BE,0x109BF,L}, {0x109C0,0x109CF,N}, {0x109D2,0x109FF,N}, {0x10A00,0x10A00,L},
    {0x10A10,0x10A13,L}, {0x10A15,0x10A17,L}, {0x10A19,0x10A35,L}, {0x10A40,0x10A48,N},
    {0x10A60,0x10A7C,L}, {0x10A7D,0x10A7E,N}, {0x10A80,0x10A9C,L}, {0x10A9D,0x10A9F,N},
    {0x10AC0,0x10AC7,L}, {0x10AC9,0x10AE4,L}, {0x10AEB,0x10AEF,N}, {0x10B00,0x10B35,L},
    {0x10B40,0x10B55,L}, {0x10B58,0x10B5F,N}, {0x10B60,0x10B72,L}, {0x10B78,0x10B7F,N},
    {0x10B80,0x10B91,L}, {0x10BA9,0x10BAF,N}, {0x10C00,0x10C48,L}, {0x10C80,0x10CB2,L},
    {0x10CC0,0x10CF2,L}, {0x10CFA,0x10CFF,N}, {0x10D00,0x10D23,L}, {0x10D30,0x10D39,N},
    {0x10D40,0x10D49,N}, {0x10D4A,0x10D65,L}, {0x10D6F,0x10D85,L}, {0x10E60,0x10E7E,N},
    {0x10E80,0x10EA9,L}, {0x10EB0,0x10EB1,L}, {0x10EC2,0x10EC7,L}, {0x10F00,0x10F1C,L},
    {0x10F1D,0x10F26,N}, {0x10F27,0x10F27,L}, {0x10F30,0x10F45,L}, {0x10F51,0x10F54,N},
    {0x10F70,0x10F81,L}, {0x10FB0,0x10FC4,L}, {0x10FC5,0x10FCB,N}, {0x10FE0,0x10FF6,L},
    {0x11003,0x11037,L}, {0x11052,0x1106F,N}, {0x11071,0x11072,L}, {0x11075,0x11075,L},
    {0x11083,0x110AF,L}, {0x110D0,0x110E8,L}, {0x110F0,0x110F9,N}, {0x11103,0x11126,L},
    {0x11136,0x1113F,N}, {0x11144,0x11144,L}, {0x11147,0x11147,L}, {0x11150,0x11172,L},
    {0x11176,0x11176,L}, {0x11183,0x111B2,L}, {0x111C1,0x111C4,L}, {0x111D0,0x111D9,N},
    {0x111DA,0x111DA,L}, {0x111DC,0x111DC,L}, {0x111E1,0x111F4,N}, {0x11200,0x11211,L},
    {0x11213,0x1122B,L}, {0x1123F,0x11240,L}, {0x11280,0x11286,L}, {0x11288,0x11288,L},
    {0x1128A,0x1128D,L}, {0x1128F,0x1129D,L}, {0x1129F,0x112A8,L}, {0x112B0,0x112DE,L},
    {0x112F0,0x112F9,N}, {0x11305,0x1130C,L}, {0x1130F,0x11310,L}, {0x11313,0x11328,L},
    {0x1132A,0x11330,L}, {0x11332,0x11333,L}, {0x11335,0x11339,L}, {0x1133D,0x1133D,L},
    {0x11350,0x11350,L}, {0x1135D,0x11361,L}, {0x11380,0x11389,L}, {0x1138B,0x1138B,L},
    {0x1138E,0x1138E,L}, {0x11390,0x113B5,L}, {0x113B7,0x113B7,L}, {0x113D1,0x113D1,L},
    {0x113D3,0x113D3,L}, {0x11400,0x11434,L}, {0x11447,0x1144A,L}, {0x11450,0x11459,N},
    {0x1145F,0x11461,L}, {0x11480,0x114AF,L}, {0x114C4,0x114C5,L}, {0x114C7,0x114C7,L},
    {0x114D0,0x114D9,N}, {0x11580,0x115AE,L}, {0x115D8,0x115DB,L}, {0x11600,0x1162F,L},
    {0x11644,0x11644,L}, {0x11650,0x11659,N}, {0x11680,0x116AA,L}, {0x116B8,0x116B8,L},
    {0x116C0,0x116C9,N}, {0x116D0,0x116E3,N}, {0x11700,0x1171A,L}, {0x11730,0x1173B,N},
    {0x11740,0x11746,L}, {0x11800,0x1182B,L}, {0x118A0,0x118DF,L}, {0x118E0,0x118F2,N},
    {0x118FF,0x11906,L}, {0x11909,0x11909,L}, {0x1190C,0x11913,L}, {0x11915,0x11916,L},
    {0x11918,0x1192F,L}, {0x1193F,0x1193F,L}, {0x11941,0x11941,L}, {0x11950,0x11959,N},
    {0x119A0,0x119A7,L}, {0x119AA,0x119D0,L}, {0x119E1,0x119E1,L}, {0x119E3,0x119E3,L},
    {0x11A00,0x11A00,L}, {0x11A0B,0x11A32,L}, {0x11A3A,0x11A3A,L}, {0x11A50,0x11A50,L},
    {0x11A5C,0x11A89,L}, {0x11A9D,0x11A9D,L}, {0x11AB0,0x11AF8,L}, {0x11BC0,0x11BE0,L},
    {0x11BF0,0x11BF9,N}, {0x11C00,0x11C08,L}, {0x11C0A,0x11C2E,L}, {0x11C40,0x11C40,L},
    {0x11C50,0x11C6C,N}, {0x11C72,0x11C8F,L}, {0x11D00,0x11D06,L}, {0x11D08,0x11D09,L},
    {0x11D0B,0x11D30,L}, {0x11D46,0x11D46,L}, {0x11D50,0x11D59,N}, {0x11D60,0x11D65,L},
    {0x11D67,0x11D68,L}, {0x11D6A,0x11D89,L}, {0x11D98,0x11D98,L}, {0x11DA0,0x11DA9,N},
    {0x11DB0,0x11DDB,L}, {0x11DE0,0x11DE9,N}, {0x11EE0,0x11EF2,L}, {0x11F02,0x11F02,L},
    {0x11F04,0x11F10,L}, {0x11F12,0x11F33,L}, {0x11F50,0x11F59,N}, {0x11FB0,0x11FB0,L},
    {0x11FC0,0x11FD4,N}, {0x12000,0x12399,L}, {0x12400,0x1246E,N}, {0x12480,0x12543,L},
    {0x12F90,0x12FF0,L}, {0x13000,0x1342F,L}, {0x13441,0x13446,L}, {0x13460,0x143FA,L},
    {0x14400,0x14646,L}, {0x16100,0x1611D,L}, {0x16130,0x16139,N}, {0x16800,0x16A38,L},
    {0x16A40,0x16A5E,L}, {0x16A60,0x16A69,N}, {0x16A70,0x16ABE,L}, {0x16AC0,0x16AC9,N},
    {0x16AD0,0x16AED,L}, {0x16B00,0x16B2F,L}, {0x16B40,0x16B43,L}, {0x16B50,0x16B59,N},
    {0x16B5B,0x16B61,N}, {0x16B63,0x16B77,L}, {0x16B7D,0x16B8F,L}, {0x16D40,0x16D6C,L},
    {0x16D70,0x16D79,N}, {0x16E40,0x16E7F,L}, {0x16E80,0x16E96,N}, {0x16EA0,0x16EB8,L},
    {0x16EBB,0x16ED3,L}, {0x16F00,0x16F4A,L}, {0x16F50,0x16F50,L}, {0x16F93,0x16F9F,L},
    {0x16FE0,0x16FE1,L}, {0x16FE3,0x16FE3,L}, {0x16FF2,0x16FF3,L}, {0x16FF4,0x16FF6,N},
    {0x17000,0x18CD5,L}, {0x18CFF,0x18D1E,L}, {0x18D80,0x18DF2,L}, {0x1AFF0,0x1AFF3,L},
    {0x1AFF5,0x1AFFB,L}, {0x1AFFD,0x1AFFE,L}, {0x1B000,0x1B122,L}, {0x1B132,0x1B132,L},
    {0x1B150,0x1B152,L}, {0x1B155,0x1B155,L}, {0x1B164,0x1B167,L}, {0x1B170,0x1B2FB,L},
    {0x1BC00,0x1BC6A,L}, {0x1BC70,0x1BC7C,L}, {0x1BC80,0x1BC88,L}, {0x1BC90,0x1BC99,L},
    {0x1CCF0,0x1CCF9,N}, {0x1D2C0,0x1D2D3,N}, {0x1D2E0,0x1D2F3,N}, {0x1D360,0x1D378,N},
    {0x1D400,0x1D454,L}, {0x1D456,0x1D49C,L}, {0x1D49E,0x1D49F,L}, {0x1D4A2,0x1D4A2,L},
    {0x1D4A5,0x1D4A6,L}, {0x1D4A9,0x1D4AC,L}, {0x1D4AE,0x1D4B9,L}, {0x1D4BB,0x1D4BB,L},
    {0x1D4BD,0x1D4C3,L}, {0x1D4C5,0x1D505,L}, {0x1D507,0x1D50A,L}, {0x1D50D,0x1D514,L},
    {0x1D516,0x1D51C,L}, {0x1D51E,0x1D539,L}, {0x1D53B,0x1D53E,L}, {0x1D540,0x1D544,L},
    {0x1D546,0x1D546,L}, {0x1D54A,0x1D550,L}, {0x1D552,0x1D6A5,L}, {0x1D6A8,0x1D6C0,L},
    {0x1D6C2,0x1D6DA,L}, {0x1D6DC,0x1D6FA,L}, {0x1D6FC,0x1D714,L}, {0x1D716,0x1D734,L},
    {0x1D736,0x1D74E,L}, {0x1D750,0x1D76E,L}, {0x1D770,0x1D788,L}, {0x1D78A,0x1D7A8,L},
    {0x1D7AA,0x1D7C2,L}, {0x1D7C4,0x1D7CB,L}, {0x1D7CE,0x1D7FF,N}, {0x1DF00,0x1DF1E,L},
    {0x1DF25,0x1DF2A,L}, {0x1E030,0x1E06D,L}, {0x1E100,0x1E12C,L}, {0x1E137,0x1E13D,L},
    {0x1E140,0x1E149,N}, {0x1E14E,0x1E14E,L}, {0x1E290,0x1E2AD,L}, {0x1E2C0,0x1E2EB,L},
    {0x1E2F0,0x1E2F9,N}, {0x1E4D0,0x1E4EB,L}, {0x1E4F0,0x1E4F9,N}, {0x1E5D0,0x1E5ED,L},
    {0x1E5F0,0x1E5F0,L}, {0x1E5F1,0x1E5FA,N}, {0x1E6C0,0x1E6DE,L}, {0x1E6E0,0x1E6E2,L},
    {0x1E6E4,0x1E6E5,L}, {0x1E6E7,0x1E6ED,L}, {0x1E6F0,0x1E6F4,L}, {0x1E6FE,0x1E6FF,L},
    {0x1E7E0,0x1E7E6,L}, {0x1E7E8,0x1E7EB,L}, {0x1E7ED,0x1E7EE,L}, {0x1E7F0,0x1E7FE,L},
    {0x1E800,0x1E8C4,L}, {0x1E8C7,0x1E8CF,N}, {0x1E900,0x1E943,L}, {0x1E94B,0x1E94B,L},
    {0x1E950,0x1E959,N}, {0x1EC71,0x1ECAB,N}, {0x1ECAD,0x1ECAF,N}, {0x1ECB1,0x1ECB4,N},
    {0x1ED01,0x1ED2D,N}, {0x1ED2F,0x1ED3D,N}, {0x1EE00,0x1EE03,L}, {0x1EE05,0x1EE1F,L},
    {0x1EE21,0x1EE22,L}, {0x1EE24,0x1EE24,L}, {0x1EE27,0x1EE27,L}, {0x1EE29,0x1EE32,L},
    {0x1EE34,0x1EE37,L}, {0x1EE39,0x1EE39,L}, {0x1EE3B,0x1EE3B,L}, {0x1EE42,0x1EE42,L},
    {0x1EE47,0x1EE47,L}, {0x1EE49,0x1EE49,L}, {0x1EE4B,0x1EE4B,L}, {0x1EE4D,0x1EE4F,L},
    {0x1EE51,0x1EE52,L}, {0x1EE54,0x1EE54,L}, {0x1EE57,0x1EE57,L}, {0x1EE59,0x1EE59,L},
    {0x1EE5B,0x1EE5B,L}, {0x1EE5D,0x1EE5D,L}, {0x1EE5F,0x1EE5F,L}, {0x1EE61,0x1EE62,L},
    {0x1EE64,0x1EE64,L}, {0x1EE67,0x1EE6A,L}, {0x1EE6C,0x1EE72,L}, {0x1EE74,0x1EE77,L},
    {0x1EE79,0x1EE7C,L}, {0x1EE7E,0x1EE7E,L}, {0x1EE80,0x1EE89,L}, {0x1EE8B,0x1EE9B,L},
    {0x1EEA1,0x1EEA3,L}, {0x1EEA5,0x1EEA9,L}, {0x1EEAB,0x1EEBB,L}, {0x1F100,0x1F10C,N},
    {0x1FBF0,0x1FBF9,N}, {0x20000,0x2A6DF,L}, {0x2A700,0x2B81D,L}, {0x2B820,0x2CEAD,L},
    {0x2CEB0,0x2EBE0,L}, {0x2EBF0,0x2EE5D,L}, {0x2F800,0x2FA1D,L}, {0x30000,0x3134A,L},
    {0x31350,0x33479,L},
};

// \s outside ASCII: Unicode's White_Space property, as UTS #18 defines \s for Unicode regexes
// (and tiktoken's Rust regex implements it). JavaScript's \s differs: it adds U+FEFF and drops
// U+0085, so JavaScript ports of GPT-2's encoder can disagree on those two characters.
bool is_non_ascii_space(char32_t cp) {
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

CharClass classify_non_ascii(char32_t cp) {
  if (is_non_ascii_space(cp)) return CharClass::kSpace;
  // The last range starting at or before cp is the only one that can contain it.
  const auto* after = std::upper_bound(std::begin(kLetterAndNumberRanges),
                                       std::end(kLetterAndNumberRanges), cp,
                                       [](char32_t c, const CodeRange& r) { return c < r.first; });
  if (after == std::begin(kLetterAndNumberRanges)) return CharClass::kOther;
  const CodeRange& range = *(after - 1);
  return cp <= range.last ? range.cls : CharClass::kOther;
}

// ASCII is most of the text, so it gets a lookup table. \s in ASCII is \t \n \v \f \r and space.
constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> classes{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      classes[c] = CharClass::kLetter;
    else if (c >= '0' && c <= '9')
      classes[c] = CharClass::kNumber;
    else if (c == ' ' || (c >= '\t' && c <= '\r'))
      classes[c] = CharClass::kSpace;
    else
      classes[c] = CharClass::kOther;
  }
  return classes;
}
constexpr std::array<CharClass, 128> kAsciiClasses = make_ascii_classes();

// classify_non_ascii's binary search needs the table sorted and non-overlapping.
constexpr bool ranges_sorted_and_disjoint() {
  for (size_t i = 0; i < std::size(kLetterAndNumberRanges); ++i) {
    const CodeRange& r = kLetterAndNumberRanges[i];
    if (r.first < 0x80 || r.first > r.last) return false;
    if (i > 0 && r.first <= kLetterAndNumberRanges[i - 1].last) return false;
  }
  return true;
}
static_assert(ranges_sorted_and_disjoint(), "kLetterAndNumberRanges must be sorted and disjoint");

// ------------------------------------------------------------------------------------------------
// 2. UTF-8 decoding and the pre-tokenizer
// ------------------------------------------------------------------------------------------------

struct TextChar {
  size_t length;  // bytes, 1..4
  CharClass cls;
};

// Decodes the UTF-8 character at text[pos] (pos < text.size()) strictly: overlong forms,
// surrogates and code points past U+10FFFF are invalid. An invalid byte counts as one kOther
// character, so arbitrary bytes still split sensibly and round-trip through encode/decode.
TextChar char_at(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return {1, kAsciiClasses[lead]};
  const TextChar invalid{1, CharClass::kOther};
  size_t length;
  char32_t cp;
  unsigned char second_min = 0x80, second_max = 0xBF;  // tighter bounds exclude bad forms
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2, cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3, cp = lead & 0x0F;
    if (lead == 0xE0) second_min = 0xA0;  // overlong
    if (lead == 0xED) second_max = 0x9F;  // UTF-16 surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4, cp = lead & 0x07;
    if (lead == 0xF0) second_min = 0x90;  // overlong
    if (lead == 0xF4) second_max = 0x8F;  // past U+10FFFF
  } else {
    return invalid;  // a continuation byte, an overlong C0/C1 lead, or F5..FF
  }
  if (pos + length > text.size()) return invalid;
  for (size_t i = 1; i < length; ++i) {
    const unsigned char continuation = byte(pos + i);
    const unsigned char low = i == 1 ? second_min : 0x80, high = i == 1 ? second_max : 0xBF;
    if (continuation < low || continuation > high) return invalid;
    cp = (cp << 6) | (continuation & 0x3F);
  }
  return {length, classify_non_ascii(cp)};
}

// Length of a contraction suffix ('s 't 're 've 'm 'll 'd, ASCII apostrophe, lower case only,
// as in GPT-2) at text[pos], or 0 if there is none.
size_t contraction_length(std::string_view text, size_t pos) {
  if (text[pos] != '\'' || pos + 1 >= text.size()) return 0;
  const char c1 = text[pos + 1];
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (pos + 2 >= text.size()) return 0;
  const char c2 = text[pos + 2];
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// End of the pre-token that starts at text[start], i.e. what GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// matches there. The alternatives are tried in order, as the regex engine would:
//   - a contraction;
//   - a run of letters, of numbers, or of "other" characters, optionally preceded by one
//     space (U+0020 only: that space is how GPT-2 marks the start of a word);
//   - otherwise a run of whitespace. \s+(?!\S) backtracks until the next character is not
//     non-whitespace, which leaves the run's last character to prefix the following word; if
//     the run is a single character before non-space that fails, and \s+ takes it alone.
size_t pretoken_end(std::string_view text, size_t start) {
  if (const size_t length = contraction_length(text, start)) return start + length;

  const TextChar first = char_at(text, start);
  size_t run_start = start;
  CharClass run_class = first.cls;
  if (text[start] == ' ' && start + 1 < text.size()) {
    const TextChar next = char_at(text, start + 1);
    if (next.cls != CharClass::kSpace) run_start = start + 1, run_class = next.cls;
  }
  if (run_class != CharClass::kSpace) {
    size_t pos = run_start;
    while (pos < text.size()) {
      const TextChar c = char_at(text, pos);
      if (c.cls != run_class) break;
      pos += c.length;
    }
    return pos;
  }

  size_t pos = start, last_char_start = start, char_count = 0;
  while (pos < text.size()) {
    const TextChar c = char_at(text, pos);
    if (c.cls != CharClass::kSpace) break;
    last_char_start = pos;
    pos += c.length;
    ++char_count;
  }
  if (pos == text.size() || char_count == 1) return pos;
  return last_char_start;
}

// ------------------------------------------------------------------------------------------------
// 3. GPT-2's byte mapping and the file loaders
// ------------------------------------------------------------------------------------------------

// encoder.json and vocab.bpe spell each token's bytes as printable characters, one code point
// per byte: printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves and the
// other 68 bytes (controls, space, DEL, NBSP, soft hyphen) become U+0100.. in byte order, so the
// space byte is 'Ġ' (U+0120). This table maps such a code point back to its byte, or -1.
constexpr int kByteCodePointLimit = 256 + 68;
constexpr std::array<int, kByteCodePointLimit> make_code_point_to_byte() {
  std::array<int, kByteCodePointLimit> to_byte{};
  for (int& b : to_byte) b = -1;
  int next_substitute = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    to_byte[printable ? b : next_substitute++] = b;
  }
  return to_byte;
}
constexpr std::array<int, kByteCodePointLimit> kCodePointToByte = make_code_point_to_byte();

// Turns a token as spelled in the files into its raw bytes; nullopt if it uses a code point
// outside the byte alphabet (which means the file is not a GPT-2 byte-level vocabulary).
std::optional<std::string> token_spelling_to_bytes(std::string_view spelling) {
  std::string bytes;
  bytes.reserve(spelling.size());
  size_t pos = 0;
  while (pos < spelling.size()) {
    const unsigned char lead = static_cast<unsigned char>(spelling[pos]);
    char32_t cp;
    if (lead < 0x80) {
      cp = lead, pos += 1;
    } else if ((lead & 0xE0) == 0xC0 && pos + 1 < spelling.size()) {
      cp = ((lead & 0x1F) << 6) | (static_cast<unsigned char>(spelling[pos + 1]) & 0x3F);
      pos += 2;
    } else {
      return std::nullopt;  // every byte's code point is below U+0800, i.e. 1 or 2 UTF-8 bytes
    }
    if (cp >= kByteCodePointLimit || kCodePointToByte[cp] < 0) return std::nullopt;
    bytes.push_back(static_cast<char>(kCodePointToByte[cp]));
  }
  return bytes;
}

std::string fetch_hint() {
  return "run scripts/fetch_tokenizer.sh to download the GPT-2 tokenizer files (or set "
         "SLIMTRAIN_TOKENIZER_DIR to a directory holding encoder.json and vocab.bpe)";
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(cat("cannot open GPT-2 tokenizer file ", path, ": ", std::strerror(errno), "; ",
                    fetch_hint()));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) throw Error(cat("error reading GPT-2 tokenizer file ", path, "; ", fetch_hint()));
  return std::move(contents).str();
}

constexpr const char* kEndOfText = "<|endoftext|>";

// Hashing std::string_view lets the word cache be probed without building a std::string.
struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

uint64_t pair_key(int left, int right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// 4. Tables, BPE, encode and decode
// ------------------------------------------------------------------------------------------------

struct Gpt2Tokenizer::Tables {
  struct Merge {
    int rank;       // line order in vocab.bpe: lower merges first
    int merged_id;  // the token the pair becomes
  };

  std::vector<std::string> token_bytes;               // id -> raw bytes
  std::array<int, 256> byte_token{};                  // byte -> id of its one-byte token
  std::unordered_map<uint64_t, Merge> merges;         // pair_key(left id, right id) -> merge
  int eot_id = -1;

  // Pre-token bytes -> its ids. Text repeats words constantly, so most pre-tokens are a lookup.
  // Cleared when full, to bound memory on huge, varied inputs.
  static constexpr size_t kMaxCachedWords = 1 << 18;
  std::mutex cache_mutex;
  std::unordered_map<std::string, std::vector<int>, StringViewHash, std::equal_to<>> word_cache;

  // Appends the BPE of one pre-token to `out`: start from one token per byte, then repeatedly
  // take the adjacent pair with the lowest merge rank and merge every occurrence of it, left to
  // right, until no adjacent pair has a merge. This is GPT-2's encoder.py algorithm, step for
  // step. It is quadratic in the pre-token's length, which is fine because pre-tokens are words.
  void bpe(std::string_view word, std::vector<int>& out) const {
    std::vector<int> symbols(word.size());
    for (size_t i = 0; i < word.size(); ++i)
      symbols[i] = byte_token[static_cast<unsigned char>(word[i])];
    while (symbols.size() > 1) {
      const Merge* best = nullptr;
      uint64_t best_pair = 0;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        const uint64_t key = pair_key(symbols[i], symbols[i + 1]);
        const auto it = merges.find(key);
        if (it != merges.end() && (best == nullptr || it->second.rank < best->rank))
          best = &it->second, best_pair = key;
      }
      if (best == nullptr) break;
      size_t kept = 0;
      for (size_t i = 0; i < symbols.size();) {
        if (i + 1 < symbols.size() && pair_key(symbols[i], symbols[i + 1]) == best_pair) {
          symbols[kept++] = best->merged_id;
          i += 2;
        } else {
          symbols[kept++] = symbols[i++];
        }
      }
      symbols.resize(kept);
    }
    out.insert(out.end(), symbols.begin(), symbols.end());
  }

  void encode_word(std::string_view word, std::vector<int>& out) {
    if (word.size() == 1) {  // one byte is one token; not worth a cache entry
      out.push_back(byte_token[static_cast<unsigned char>(word[0])]);
      return;
    }
    {
      std::lock_guard lock(cache_mutex);
      if (const auto it = word_cache.find(word); it != word_cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const size_t first_new = out.size();
    bpe(word, out);  // outside the lock: other threads keep using the cache meanwhile
    std::lock_guard lock(cache_mutex);
    if (word_cache.size() >= kMaxCachedWords) word_cache.clear();
    word_cache.emplace(std::string(word), std::vector<int>(out.begin() + first_new, out.end()));
  }
};

Gpt2Tokenizer Gpt2Tokenizer::load(const std::string& dir) {
  auto tables = std::make_shared<Tables>();
  std::unordered_map<std::string, int> id_of_bytes;

  // encoder.json: {"token spelling": id, ...} with ids 0..n-1, each once.
  const std::string encoder_path = dir + "/encoder.json";
  {
    const std::string text = read_whole_file(encoder_path);
    nlohmann::json encoder;
    try {
      encoder = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(cat(encoder_path, " is not valid JSON (", e.what(), "); the file is corrupt: ",
                      fetch_hint()));
    }
    if (!encoder.is_object() || encoder.empty())
      throw Error(cat(encoder_path, " is not a JSON object of token -> id; ", fetch_hint()));
    const size_t vocab_size = encoder.size();
    tables->token_bytes.resize(vocab_size);
    std::vector<bool> seen(vocab_size, false);
    for (const auto& [spelling, id_value] : encoder.items()) {
      if (!id_value.is_number_integer() || id_value.get<int64_t>() < 0 ||
          id_value.get<int64_t>() >= static_cast<int64_t>(vocab_size))
        throw Error(cat(encoder_path, ": token \"", spelling, "\" has id ", id_value.dump(),
                        ", expected an integer in [0, ", vocab_size, "); ", fetch_hint()));
      const int id = static_cast<int>(id_value.get<int64_t>());
      if (seen[id])
        throw Error(cat(encoder_path, ": id ", id, " is used by more than one token; ",
                        fetch_hint()));
      seen[id] = true;
      std::optional<std::string> bytes = token_spelling_to_bytes(spelling);
      if (!bytes)
        throw Error(cat(encoder_path, ": token \"", spelling, "\" (id ", id,
                        ") uses characters outside GPT-2's byte alphabet; ", fetch_hint()));
      tables->token_bytes[id] = *bytes;
      id_of_bytes.emplace(std::move(*bytes), id);
    }
    // n distinct ids in [0, n): every id is used, so token_bytes has no holes.
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = id_of_bytes.find(std::string(1, static_cast<char>(b)));
    if (it == id_of_bytes.end())
      throw Error(cat(encoder_path, " has no token for byte ", b,
                      ", so it is not a byte-level BPE vocabulary; ", fetch_hint()));
    tables->byte_token[b] = it->second;
  }
  if (const auto it = id_of_bytes.find(kEndOfText); it != id_of_bytes.end())
    tables->eot_id = it->second;
  else
    throw Error(cat(encoder_path, " has no \"", kEndOfText, "\" token; ", fetch_hint()));

  // vocab.bpe: a "#version: ..." line, then one merge per line, "left right", best first.
  const std::string merges_path = dir + "/vocab.bpe";
  const std::string text = read_whole_file(merges_path);
  size_t line_start = 0;
  int line_number = 0;
  int rank = 0;
  while (line_start < text.size()) {
    size_t line_end = text.find('\n', line_start);
    if (line_end == std::string::npos) line_end = text.size();
    std::string_view line(text.data() + line_start, line_end - line_start);
    line_start = line_end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_number == 1 && line.starts_with("#version"))) continue;

    const auto bad_line = [&](std::string_view why) {
      return Error(cat(merges_path, ":", line_number, ": ", why, " in merge line \"", line,
                       "\"; ", fetch_hint()));
    };
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string_view::npos)
      throw bad_line("expected two tokens separated by one space");
    const std::optional<std::string> left = token_spelling_to_bytes(line.substr(0, space));
    const std::optional<std::string> right = token_spelling_to_bytes(line.substr(space + 1));
    if (!left || !right) throw bad_line("characters outside GPT-2's byte alphabet");
    const auto left_id = id_of_bytes.find(*left);
    const auto right_id = id_of_bytes.find(*right);
    const auto merged_id = id_of_bytes.find(*left + *right);
    if (left_id == id_of_bytes.end() || right_id == id_of_bytes.end() ||
        merged_id == id_of_bytes.end())
      throw bad_line(cat("a token missing from ", encoder_path, " (the two files do not match)"));
    const bool inserted =
        tables->merges.emplace(pair_key(left_id->second, right_id->second),
                               Tables::Merge{rank, merged_id->second}).second;
    if (!inserted) throw bad_line("a pair already merged on an earlier line");
    ++rank;
  }
  if (rank == 0) throw Error(cat(merges_path, " holds no merges; ", fetch_hint()));
  return Gpt2Tokenizer(std::move(tables));
}

std::vector<int> Gpt2Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  ids.reserve(text.size() / 4 + 16);  // English averages a little over 4 bytes per token
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = pretoken_end(text, start);
    tables_->encode_word(text.substr(start, end - start), ids);
    start = end;
  }
  return ids;
}

std::string Gpt2Tokenizer::decode_token(int id) const {
  if (id < 0 || id >= vocab_size())
    throw Error(cat("token id ", id, " is outside the GPT-2 vocabulary [0, ", vocab_size(), ")"));
  return tables_->token_bytes[id];
}

std::string Gpt2Tokenizer::decode(const std::vector<int>& ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int id = ids[i];
    if (id < 0 || id >= vocab_size())
      throw Error(cat("token id ", id, " at position ", i,
                      " is outside the GPT-2 vocabulary [0, ", vocab_size(), ")"));
    text += tables_->token_bytes[id];
  }
  return text;
}

int Gpt2Tokenizer::eot_token() const { return tables_->eot_id; }

int Gpt2Tokenizer::vocab_size() const { return static_cast<int>(tables_->token_bytes.size()); }

std::string default_tokenizer_dir() {
  const char* from_env = std::getenv("SLIMTRAIN_TOKENIZER_DIR");
  if (from_env != nullptr && from_env[0] != '\0') return from_env;
  return SLIMTRAIN_SOURCE_DIR "/data/tokenizer";
}

}  // namespace slim
