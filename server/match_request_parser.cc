#include "server/match_request_parser.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/container/inlined_vector.h"

namespace kvindex::server {
namespace {

static_assert(std::endian::native == std::endian::little, "the varint decoder loads little-endian words");

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

constexpr uint32_t kTokenIdsField = v1::MatchRequest::kTokenIdsFieldNumber;
constexpr uint64_t kStopBits = 0x8080808080808080ULL;  // clear on the last byte of a varint

// A byte range of the input.
struct Run {
  const char* begin;
  const char* end;
};

// Reads the varint at *p (at most 10 bytes, ending before `end`) and moves *p
// past it; false if it is longer or runs past `end`.
bool ReadVarint(const char** p, const char* end, uint64_t* value) {
  uint64_t v = 0;
  for (int shift = 0; shift < 70 && *p < end; shift += 7) {
    const auto byte = static_cast<uint8_t>(*(*p)++);
    v |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (byte < 0x80) {
      *value = v;
      return true;
    }
  }
  return false;
}

// Moves *p past the field with `wire_type` whose tag was just read; false for
// a group, an unknown wire type or a field running past `end`.
bool SkipField(uint32_t wire_type, const char** p, const char* end) {
  uint64_t length = 0;
  switch (wire_type) {
    case kVarint:
      return ReadVarint(p, end, &length);
    case kFixed64:
      length = 8;
      break;
    case kFixed32:
      length = 4;
      break;
    case kLengthDelimited:
      if (!ReadVarint(p, end, &length)) return false;
      break;
    default:
      return false;
  }
  if (length > static_cast<uint64_t>(end - *p)) return false;
  *p += length;
  return true;
}

// 1 in each byte of the result where that byte of `w` ends a varint, else 0.
inline uint64_t StopBytes(uint64_t w) { return (~w & kStopBits) >> 7; }

// Bit i set where byte i of the 64 bytes at `p` ends a varint.
uint64_t StopMask(const char* p) {
  uint64_t words[8];
  std::memcpy(words, p, sizeof(words));
  uint64_t mask = 0;
  for (int i = 0; i < 8; ++i) {
    // The bits at 0, 8, ..., 56 gathered into the top byte (no two products collide).
    mask |= ((StopBytes(words[i]) * 0x0102040810204080ULL) >> 56) << (8 * i);
  }
  return mask;
}

// The same for the n < 64 bytes at `p`.
uint64_t StopMask(const char* p, size_t n) {
  char padded[64] = {};
  std::memcpy(padded, p, n);
  return StopMask(padded) & ((uint64_t{1} << n) - 1);  // the padding ends no varint
}

// Varints in [begin, end): the bytes that end one.
size_t CountVarints(const char* begin, const char* end) {
  size_t count = 0;
  const char* p = begin;
  for (; end - p >= 8; p += 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    count += (StopBytes(w) * 0x0101010101010101ULL) >> 56;  // sum of the bytes
  }
  for (; p < end; ++p) count += static_cast<uint8_t>(*p) < 0x80 ? 1 : 0;
  return count;
}

// The low 8 * n bytes of a word, for a varint of n = 1..5 bytes.
constexpr uint64_t kVarintMask[6] = {0, 0xff, 0xffff, 0xffffff, 0xffffffff, 0xffffffffff};

// The value of the varint of `length` (1..5) bytes at the bottom of `w`,
// truncated to 32 bits as protobuf does for uint32. Ids under 2^21 (up to 3
// bytes: every id of a vocabulary up to 2M) take the short branch.
inline uint32_t VarintValue(uint64_t w, size_t length) {
  w &= kVarintMask[length];
  if (length <= 3) return static_cast<uint32_t>((w & 0x7f) | ((w >> 1) & 0x3f80) | ((w >> 2) & 0x1fc000));
  return static_cast<uint32_t>((w & 0x7f) | ((w >> 1) & (0x7fULL << 7)) | ((w >> 2) & (0x7fULL << 14)) |
                               ((w >> 3) & (0x7fULL << 21)) | ((w >> 4) & (0x7fULL << 28)));
}

// Decodes the varints ending in `stops` (bits of the 64 bytes from `base`) of
// the run at `begin`, the first starting at *start; `kDirect`: every 8-byte
// load from one of them stays inside the run. Returns the end of what it
// wrote, or nullptr on a varint longer than 5 bytes.
template <bool kDirect>
inline uint32_t* DecodeChunk(const char* begin, const char* tail, size_t tail_start, size_t base, uint64_t stops,
                             size_t* start, uint32_t* out) {
  size_t next = *start;
  for (; stops != 0; stops &= stops - 1) {
    const size_t last = base + static_cast<size_t>(std::countr_zero(stops));
    const size_t length = last - next + 1;
    if (length > 5) return nullptr;
    uint64_t w;
    if constexpr (kDirect) {
      std::memcpy(&w, begin + next, 8);
    } else {
      std::memcpy(&w, next < tail_start ? begin + next : tail + (next - tail_start), 8);
    }
    *out++ = VarintValue(w, length);
    next = last + 1;
  }
  *start = next;
  return out;
}

// Decodes the varints of [begin, end), whose last byte ends one, into `out`
// (room for their count); returns the end of what it wrote, or nullptr on a
// varint longer than 5 bytes. Where each varint starts comes from the stop
// bits of 64 bytes at a time, not from the length of the one before, so the
// loads of successive varints do not wait for each other.
uint32_t* DecodeVarints(const char* begin, const char* end, uint32_t* out) {
  const size_t n = static_cast<size_t>(end - begin);
  // Varints starting in the last 8 bytes are read from a zero-padded copy.
  const size_t tail_start = n > 8 ? n - 8 : 0;
  char tail[16] = {};
  std::memcpy(tail, begin + tail_start, n - tail_start);
  size_t start = 0;  // of the next varint
  size_t base = 0;
  // Whole chunks whose varints all start at least 8 bytes before the end.
  for (; base + 64 + 8 <= n; base += 64) {
    out = DecodeChunk<true>(begin, tail, tail_start, base, StopMask(begin + base), &start, out);
    if (out == nullptr) return nullptr;
  }
  for (; base < n; base += 64) {
    const uint64_t stops = n - base >= 64 ? StopMask(begin + base) : StopMask(begin + base, n - base);
    out = DecodeChunk<false>(begin, tail, tail_start, base, stops, &start, out);
    if (out == nullptr) return nullptr;
  }
  return out;
}

// The fast path; false sends the input to protobuf.
bool ParseSplit(absl::string_view wire, v1::MatchRequest* request) {
  const char* p = wire.data();
  const char* const end = p + wire.size();
  absl::InlinedVector<Run, 2> token_runs;  // packed payloads and single unpacked varints, in order
  absl::InlinedVector<Run, 2> other_runs;  // every other field, in order; adjacent ones joined
  while (p < end) {
    const char* const field_start = p;
    uint64_t tag = 0;
    if (!ReadVarint(&p, end, &tag) || tag > UINT32_MAX) return false;
    const auto wire_type = static_cast<uint32_t>(tag & 7);
    if ((tag >> 3) != kTokenIdsField) {
      if (!SkipField(wire_type, &p, end)) return false;
      if (!other_runs.empty() && other_runs.back().end == field_start) {
        other_runs.back().end = p;
      } else {
        other_runs.push_back({field_start, p});
      }
      continue;
    }
    const char* const payload = p;
    if (wire_type == kLengthDelimited) {
      uint64_t length = 0;
      if (!ReadVarint(&p, end, &length) || length > static_cast<uint64_t>(end - p)) return false;
      token_runs.push_back({p, p + length});
      p += length;
    } else if (wire_type == kVarint) {
      uint64_t ignored = 0;
      if (!ReadVarint(&p, end, &ignored)) return false;
      token_runs.push_back({payload, p});
    } else {
      return false;
    }
  }
  size_t tokens = 0;
  for (const Run& run : token_runs) {
    // A run must end a varint; only then does every varint in it end inside it.
    if (run.begin != run.end && static_cast<uint8_t>(run.end[-1]) >= 0x80) return false;
    tokens += CountVarints(run.begin, run.end);
  }
  if (tokens > static_cast<size_t>(INT32_MAX)) return false;
  // The other fields: in place when they are one run (or none), else joined.
  std::string joined;
  absl::string_view rest;
  if (other_runs.size() == 1) {
    rest = absl::string_view(other_runs[0].begin, static_cast<size_t>(other_runs[0].end - other_runs[0].begin));
  } else if (other_runs.size() > 1) {
    for (const Run& run : other_runs) joined.append(run.begin, run.end);
    rest = joined;
  }
  if (!request->ParseFromArray(rest.data(), static_cast<int>(rest.size()))) return false;
  google::protobuf::RepeatedField<uint32_t>* ids = request->mutable_token_ids();
  ids->Reserve(static_cast<int>(tokens));
  uint32_t* out = ids->AddNAlreadyReserved(static_cast<int>(tokens));
  for (const Run& run : token_runs) {
    out = DecodeVarints(run.begin, run.end, out);
    if (out == nullptr) return false;
  }
  return true;
}

}  // namespace

bool ParseMatchRequest(absl::string_view wire, v1::MatchRequest* request) {
  if (wire.size() > static_cast<size_t>(INT32_MAX)) return false;
  if (ParseSplit(wire, request)) return true;
  return request->ParseFromArray(wire.data(), static_cast<int>(wire.size()));
}

bool ReceivedBytes(const grpc::ByteBuffer& wire, grpc::Slice& storage, absl::string_view& bytes) {
  if (!wire.Valid()) {  // no bytes at all
    bytes = absl::string_view();
    return true;
  }
  if (!wire.TrySingleSlice(&storage).ok() && !wire.DumpToSingleSlice(&storage).ok()) return false;
  bytes = absl::string_view(reinterpret_cast<const char*>(storage.begin()), storage.size());
  return true;
}

bool ParseMatchRequest(const grpc::ByteBuffer& wire, v1::MatchRequest* request) {
  grpc::Slice storage;
  absl::string_view bytes;
  return ReceivedBytes(wire, storage, bytes) && ParseMatchRequest(bytes, request);
}

}  // namespace kvindex::server
