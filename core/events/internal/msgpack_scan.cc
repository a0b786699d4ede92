#include "core/events/internal/msgpack_scan.h"

#include <array>
#include <string>

#include "core/events/internal/decode_error.h"

namespace kvindex {
namespace {

using decoding::Cat;

absl::Status Fail(DecodeErrorReason reason, std::string_view what) { return decoding::Fail(reason, {}, what); }

// How a value with a given first byte is laid out.
struct Format {
  enum Kind : uint8_t { kScalar, kBytes, kArray, kMap, kInvalid } kind = kInvalid;
  uint8_t len_bytes = 0;  // width of the big-endian length/count after the first byte
  uint8_t fixed = 0;      // bytes that follow regardless of the length (scalars, ext type)
  uint8_t count = 0;      // length/count stored in the first byte (fix formats)
};

constexpr std::array<Format, 256> MakeFormats() {
  std::array<Format, 256> f{};
  using K = Format::Kind;
  for (int b = 0x00; b <= 0x7f; ++b) f[b] = {K::kScalar};                         // positive fixint
  for (int b = 0x80; b <= 0x8f; ++b) f[b] = {K::kMap, 0, 0, uint8_t(b & 0x0f)};    // fixmap
  for (int b = 0x90; b <= 0x9f; ++b) f[b] = {K::kArray, 0, 0, uint8_t(b & 0x0f)};  // fixarray
  for (int b = 0xa0; b <= 0xbf; ++b) f[b] = {K::kBytes, 0, 0, uint8_t(b & 0x1f)};  // fixstr
  for (int b = 0xe0; b <= 0xff; ++b) f[b] = {K::kScalar};                         // negative fixint
  f[0xc0] = f[0xc2] = f[0xc3] = {K::kScalar};                                     // nil, false, true
  f[0xc4] = f[0xd9] = {K::kBytes, 1};                                              // bin8, str8
  f[0xc5] = f[0xda] = {K::kBytes, 2};                                              // bin16, str16
  f[0xc6] = f[0xdb] = {K::kBytes, 4};                                              // bin32, str32
  f[0xc7] = {K::kBytes, 1, 1};                                                     // ext8
  f[0xc8] = {K::kBytes, 2, 1};                                                     // ext16
  f[0xc9] = {K::kBytes, 4, 1};                                                     // ext32
  f[0xca] = {K::kScalar, 0, 4};                                                    // float32
  f[0xcb] = {K::kScalar, 0, 8};                                                    // float64
  f[0xcc] = f[0xd0] = {K::kScalar, 0, 1};                                          // (u)int8
  f[0xcd] = f[0xd1] = {K::kScalar, 0, 2};                                          // (u)int16
  f[0xce] = f[0xd2] = {K::kScalar, 0, 4};                                          // (u)int32
  f[0xcf] = f[0xd3] = {K::kScalar, 0, 8};                                          // (u)int64
  f[0xd4] = {K::kScalar, 0, 2};                                                    // fixext1
  f[0xd5] = {K::kScalar, 0, 3};                                                    // fixext2
  f[0xd6] = {K::kScalar, 0, 5};                                                    // fixext4
  f[0xd7] = {K::kScalar, 0, 9};                                                    // fixext8
  f[0xd8] = {K::kScalar, 0, 17};                                                   // fixext16
  f[0xdc] = {K::kArray, 2};                                                        // array16
  f[0xdd] = {K::kArray, 4};                                                        // array32
  f[0xde] = {K::kMap, 2};                                                          // map16
  f[0xdf] = {K::kMap, 4};                                                          // map32
  return f;  // 0xc1 stays kInvalid: msgpack never uses it.
}

constexpr std::array<Format, 256> kFormats = MakeFormats();

}  // namespace

absl::Status ScanMsgpack(std::string_view data, size_t max_size) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t len = data.size();
  size_t pos = 0;
  // left[d]: values still to read in the container open at depth d (0: the root).
  std::array<uint64_t, kMaxMsgpackDepth + 1> left;
  size_t depth = 0;
  left[0] = 1;
  auto truncated = [&pos] {
    return Fail(DecodeErrorReason::kTruncated, Cat("payload ends inside a value at byte ", pos));
  };
  while (true) {
    if (left[depth] == 0) {
      if (depth == 0) break;
      --depth;
      continue;
    }
    --left[depth];
    if (pos >= len) return truncated();
    const size_t at = pos;
    const Format f = kFormats[p[pos++]];
    if (f.kind == Format::kScalar) {
      if (len - pos < f.fixed) return truncated();
      pos += f.fixed;
      continue;
    }
    if (f.kind == Format::kInvalid) {
      return Fail(DecodeErrorReason::kMalformed, Cat("invalid msgpack byte 0xc1 at byte ", at));
    }
    uint64_t n = f.count;
    if (f.len_bytes > 0) {
      if (len - pos < f.len_bytes) return truncated();
      n = ReadBigEndian(p + pos, f.len_bytes);
      pos += f.len_bytes;
      if (n > max_size) {
        return Fail(DecodeErrorReason::kTooLarge, Cat("value at byte ", at, " declares ", n, " elements or bytes"));
      }
    }
    if (f.kind == Format::kBytes) {
      if (len - pos < n + f.fixed) return truncated();
      pos += n + f.fixed;
      continue;
    }
    if (n == 0) continue;
    if (depth == kMaxMsgpackDepth) {
      return Fail(DecodeErrorReason::kTooLarge, Cat("nesting deeper than ", kMaxMsgpackDepth, " at byte ", at));
    }
    left[++depth] = f.kind == Format::kMap ? 2 * n : n;
  }
  if (pos != len) {
    return Fail(DecodeErrorReason::kTrailingBytes, Cat(len - pos, " bytes after the batch at byte ", pos));
  }
  return absl::OkStatus();
}


}  // namespace kvindex
