#include "core/events/event_decoder.h"

#include <msgpack.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// Decoding runs in two passes over the payload:
//  1. ScanStructure() walks the raw msgpack bytes without allocating. It
//     proves the payload is exactly one complete msgpack value with nesting
//     <= kMaxDepth and no declared size above max_payload_bytes, and it
//     classifies failures (truncated / trailing_bytes / malformed / too_large).
//  2. msgpack::unpack builds the object tree, referencing strings and bins in
//     the payload (no copies). Because pass 1 proved that every declared
//     element is present, the tree holds at most one object per payload byte:
//     a small payload declaring huge arrays cannot make msgpack-c allocate
//     (msgpack-c allocates an array's elements as soon as it reads the header).
// The typed EventBatch is then read from the tree; every type and size check
// happens there, and no exception escapes.

namespace kvindex {
namespace {

// Deep enough for any real payload and for absurd extra_keys to be an event's
// error (DecodeLimits::max_extra_keys_depth) rather than the batch's; the
// scan's stack is 8 bytes a level.
constexpr size_t kMaxDepth = 2048;
// A data-parallel rank r publishes on port + r, so ranks fit a port number.
constexpr uint64_t kMaxDpRank = 65535;
// Events reserved ahead per batch (an event may be a single byte).
constexpr size_t kReserveEvents = 4096;
// Bad events listed with their message per batch; the rest are only counted.
constexpr size_t kMaxBadEventDetails = 16;
// What one extra-keys list item costs of DecodeLimits::max_extra_keys_bytes.
constexpr size_t kExtraKeyItemCost = 16;

using msgpack::type::object_type;

// ---------------------------------------------------------------------------
// Errors. (Debian's absl::string_view is not std::string_view, so messages are
// built with Cat() rather than absl::StrCat.)

void AppendPiece(std::string* out, std::string_view s) { out->append(s); }

template <typename T>
  requires std::is_integral_v<T>
void AppendPiece(std::string* out, T v) {
  out->append(std::to_string(v));
}

template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (AppendPiece(&out, args), ...);
  return out;
}

// Where an error is: event index (-1: the batch itself) and field name.
struct Loc {
  int64_t event = -1;
  std::string_view field;
};

absl::Status Fail(DecodeErrorReason reason, const Loc& loc, std::string_view what) {
  std::string msg = Cat(DecodeErrorReasonName(reason), ": ");
  if (loc.event >= 0) msg += Cat("event ", loc.event, ": ");
  if (!loc.field.empty()) msg += Cat(loc.field, ": ");
  msg.append(what);
  return absl::InvalidArgumentError(msg);
}

std::string_view TypeName(const msgpack::object& o) {
  switch (o.type) {
    case object_type::NIL: return "nil";
    case object_type::BOOLEAN: return "bool";
    case object_type::POSITIVE_INTEGER: return "uint";
    case object_type::NEGATIVE_INTEGER: return "negative int";
    case object_type::FLOAT32: return "float32";
    case object_type::FLOAT64: return "float64";
    case object_type::STR: return "str";
    case object_type::BIN: return "bin";
    case object_type::ARRAY: return "array";
    case object_type::MAP: return "map";
    case object_type::EXT: return "ext";
  }
  return "unknown";
}

absl::Status WrongType(const Loc& loc, std::string_view expected, const msgpack::object& got) {
  return Fail(DecodeErrorReason::kWrongType, loc,
              Cat("expected ", expected, ", got ", TypeName(got)));
}

// ---------------------------------------------------------------------------
// Pass 1: structure scan.

uint64_t ReadBigEndian(const unsigned char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

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

// Returns OK iff `data` is exactly one complete msgpack value, nested at most
// kMaxDepth deep, with no declared length or count above `max_size`.
absl::Status ScanStructure(std::string_view data, size_t max_size) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t len = data.size();
  size_t pos = 0;
  // left[d]: values still to read in the container open at depth d (0: the root).
  std::array<uint64_t, kMaxDepth + 1> left;
  size_t depth = 0;
  left[0] = 1;
  auto truncated = [&pos] {
    return Fail(DecodeErrorReason::kTruncated, {},
                Cat("payload ends inside a value at byte ", pos));
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
      return Fail(DecodeErrorReason::kMalformed, {},
                  Cat("invalid msgpack byte 0xc1 at byte ", at));
    }
    uint64_t n = f.count;
    if (f.len_bytes > 0) {
      if (len - pos < f.len_bytes) return truncated();
      n = ReadBigEndian(p + pos, f.len_bytes);
      pos += f.len_bytes;
      if (n > max_size) {
        return Fail(DecodeErrorReason::kTooLarge, {},
                    Cat("value at byte ", at, " declares ", n, " elements or bytes"));
      }
    }
    if (f.kind == Format::kBytes) {
      if (len - pos < n + f.fixed) return truncated();
      pos += n + f.fixed;
      continue;
    }
    if (n == 0) continue;
    if (depth == kMaxDepth) {
      return Fail(DecodeErrorReason::kTooLarge, {},
                  Cat("nesting deeper than ", kMaxDepth, " at byte ", at));
    }
    left[++depth] = f.kind == Format::kMap ? 2 * n : n;
  }
  if (pos != len) {
    return Fail(DecodeErrorReason::kTrailingBytes, {},
                Cat(len - pos, " bytes after the batch at byte ", pos));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Pass 2 helpers: typed reads from the object tree.

std::string_view StrOf(const msgpack::object& o) {
  return std::string_view(o.via.str.ptr, o.via.str.size);
}

// Unsigned integer in [0, max].
absl::Status ReadUint(const msgpack::object& o, const Loc& loc, uint64_t max, uint64_t* out) {
  if (o.type != object_type::POSITIVE_INTEGER) return WrongType(loc, "non-negative int", o);
  if (o.via.u64 > max) {
    return Fail(DecodeErrorReason::kTooLarge, loc, Cat(o.via.u64, " exceeds ", max));
  }
  *out = o.via.u64;
  return absl::OkStatus();
}

std::string HashLabel(int64_t index) { return index < 0 ? "" : Cat("hash ", index, ": "); }

// An engine hash: an int of any width (negative: two's complement) or bytes
// (the last 8 bytes big-endian; fewer bytes: their big-endian value).
// `index` >= 0 names the hash's position in its list in errors.
absl::Status ReadHash(const msgpack::object& o, const Loc& loc, int64_t index, uint64_t* out) {
  switch (o.type) {
    case object_type::POSITIVE_INTEGER:
      *out = o.via.u64;
      return absl::OkStatus();
    case object_type::NEGATIVE_INTEGER:
      *out = static_cast<uint64_t>(o.via.i64);
      return absl::OkStatus();
    case object_type::BIN: {
      const uint32_t n = o.via.bin.size;
      if (n == 0) {
        return Fail(DecodeErrorReason::kWrongType, loc, Cat(HashLabel(index), "empty bytes"));
      }
      const size_t take = n < 8 ? n : 8;
      *out = ReadBigEndian(reinterpret_cast<const unsigned char*>(o.via.bin.ptr) + (n - take), take);
      return absl::OkStatus();
    }
    default:
      return Fail(DecodeErrorReason::kWrongType, loc,
                  Cat(HashLabel(index), "expected int or bin, got ", TypeName(o)));
  }
}

absl::Status ReadHashes(const msgpack::object& o, const Loc& loc, size_t max_blocks,
                        std::vector<uint64_t>* out) {
  if (o.type != object_type::ARRAY) return WrongType(loc, "array", o);
  const uint32_t n = o.via.array.size;
  if (n > max_blocks) {
    return Fail(DecodeErrorReason::kTooLarge, loc,
                Cat(n, " blocks exceed the limit of ", max_blocks));
  }
  out->resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    absl::Status s = ReadHash(o.via.array.ptr[i], loc, i, &(*out)[i]);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ReadTokens(const msgpack::object& o, const Loc& loc, std::vector<uint32_t>* out) {
  constexpr uint64_t kMax = std::numeric_limits<uint32_t>::max();
  const uint32_t n = o.via.array.size;  // caller checked the type and count
  out->resize(n);
  const msgpack::object* items = o.via.array.ptr;
  for (uint32_t i = 0; i < n; ++i) {
    const msgpack::object& t = items[i];
    if (t.type == object_type::POSITIVE_INTEGER && t.via.u64 <= kMax) {
      (*out)[i] = static_cast<uint32_t>(t.via.u64);
      continue;
    }
    if (t.type == object_type::POSITIVE_INTEGER || t.type == object_type::NEGATIVE_INTEGER) {
      return Fail(DecodeErrorReason::kTooLarge, loc,
                  Cat("token ", i, " does not fit uint32"));
    }
    return Fail(DecodeErrorReason::kWrongType, loc,
                Cat("token ", i, ": expected int, got ", TypeName(t)));
  }
  return absl::OkStatus();
}

bool IsNil(const msgpack::object* o) { return o == nullptr || o->type == object_type::NIL; }

absl::Status ReadOptionalString(const msgpack::object* o, const Loc& loc,
                                std::optional<std::string>* out) {
  if (IsNil(o)) return absl::OkStatus();
  if (o->type != object_type::STR) return WrongType(loc, "str or nil", *o);
  out->emplace(StrOf(*o));
  return absl::OkStatus();
}

absl::Status ReadOptionalInt64(const msgpack::object* o, const Loc& loc,
                               std::optional<int64_t>* out) {
  if (IsNil(o)) return absl::OkStatus();
  if (o->type == object_type::NEGATIVE_INTEGER) {
    *out = o->via.i64;
    return absl::OkStatus();
  }
  if (o->type != object_type::POSITIVE_INTEGER) return WrongType(loc, "int or nil", *o);
  uint64_t v = 0;
  absl::Status s = ReadUint(*o, loc, std::numeric_limits<int64_t>::max(), &v);
  if (s.ok()) *out = static_cast<int64_t>(v);
  return s;
}

// ---------------------------------------------------------------------------
// Pass 2: events. An event's fields are first located (array position or map
// key), then decoded by the same code whatever the layout.

// Fields in wire (array) order; those after kNumStoredArray exist only as map keys.
enum StoredField {
  kHashes, kParent, kTokens, kBlockSize, kLoraId, kMedium, kLoraName, kExtraKeys, kGroupIdx,
  kSpecKind, kSlidingWindow, kNumStoredArray,
  kLocality = kNumStoredArray, kOwnership, kSessionId, kCacheSalt, kNumStored
};
enum RemovedField { kRemovedHashes, kRemovedMedium, kRemovedGroupIdx, kNumRemovedArray,
                    kRemovedLocality = kNumRemovedArray, kRemovedOwnership, kRemovedSessionId,
                    kNumRemoved };

// Map keys per field.
constexpr std::string_view kStoredNames[kNumStored] = {
    "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium",
    "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window",
    "locality", "ownership", "session_id", "cache_salt"};
constexpr std::string_view kRemovedNames[kNumRemoved] = {
    "block_hashes", "medium", "group_idx", "locality", "ownership", "session_id"};

using Fields = std::array<const msgpack::object*, kNumStored>;

class BatchDecoder {
 public:
  BatchDecoder(const DecodeLimits& limits, EventBatch* batch) : limits_(limits), batch_(batch) {}

  absl::Status DecodeBatch(const msgpack::object& root) {
    if (root.type != object_type::ARRAY) return WrongType({.field = "batch"}, "array", root);
    const uint32_t size = root.via.array.size;
    if (size < 2) {
      return Fail(DecodeErrorReason::kWrongType, {.field = "batch"},
                  Cat("expected [ts, events, dp_rank?], got ", size, " elements"));
    }
    const msgpack::object* items = root.via.array.ptr;
    absl::Status s = ReadTs(items[0]);
    if (s.ok() && size >= 3 && !IsNil(&items[2])) {
      uint64_t rank = 0;
      s = ReadUint(items[2], {.field = "dp_rank"}, kMaxDpRank, &rank);
      if (s.ok()) batch_->dp_rank = static_cast<int64_t>(rank);
    }
    if (!s.ok()) return s;
    const msgpack::object& events = items[1];
    if (events.type != object_type::ARRAY) return WrongType({.field = "events"}, "array", events);
    if (events.via.array.size > limits_.max_events) {
      return Fail(DecodeErrorReason::kTooLarge, {.field = "events"},
                  Cat(events.via.array.size, " events exceed the limit of ",
                               limits_.max_events));
    }
    // An event may be one byte: reserve for what real payloads hold, grow beyond.
    batch_->events.reserve(std::min<size_t>(events.via.array.size, kReserveEvents));
    for (uint32_t i = 0; i < events.via.array.size; ++i) {
      s = DecodeEvent(events.via.array.ptr[i], i);
      if (s.ok()) continue;
      const DecodeErrorReason reason = DecodeErrorReasonOf(s);
      ++batch_->bad_events_by_reason[static_cast<size_t>(reason)];
      if (batch_->bad_events.size() < kMaxBadEventDetails) {
        batch_->bad_events.push_back({i, reason, std::string(s.message().data(), s.message().size())});
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status ReadTs(const msgpack::object& o) {
    switch (o.type) {
      case object_type::FLOAT32:
      case object_type::FLOAT64: batch_->ts = o.via.f64; break;
      case object_type::POSITIVE_INTEGER: batch_->ts = static_cast<double>(o.via.u64); break;
      case object_type::NEGATIVE_INTEGER: batch_->ts = static_cast<double>(o.via.i64); break;
      default: return WrongType({.field = "ts"}, "number", o);
    }
    return absl::OkStatus();
  }

  absl::Status DecodeEvent(const msgpack::object& ev, int64_t index) {
    const Loc loc{index, ""};
    const msgpack::object* tag = nullptr;
    if (ev.type == object_type::ARRAY) {
      if (ev.via.array.size == 0) {
        return Fail(DecodeErrorReason::kWrongType, loc, "empty event array");
      }
      tag = &ev.via.array.ptr[0];
    } else if (ev.type == object_type::MAP) {
      tag = FindMapValue(ev, "type");
      if (tag == nullptr) return Fail(DecodeErrorReason::kWrongType, loc, "map without \"type\"");
    } else {
      return WrongType(loc, "array or map", ev);
    }
    if (tag->type != object_type::STR) return WrongType({index, "type"}, "str", *tag);
    const std::string_view name = StrOf(*tag);
    if (name == "BlockStored") {
      Fields f{};
      LocateFields(ev, kStoredNames, kNumStoredArray, &f);
      return AddBlockStored(f, index);
    }
    if (name == "BlockRemoved") {
      Fields f{};
      LocateFields(ev, kRemovedNames, kNumRemovedArray, &f);
      return AddBlockRemoved(f, index);
    }
    if (name == "AllBlocksCleared") {
      Fields unused{};
      LocateFields(ev, {}, 0, &unused);  // counts unknown map keys
      batch_->events.emplace_back(AllBlocksCleared{});
      return absl::OkStatus();
    }
    ++batch_->skipped_events;
    return absl::OkStatus();
  }

  static const msgpack::object* FindMapValue(const msgpack::object& map, std::string_view key) {
    for (uint32_t i = 0; i < map.via.map.size; ++i) {
      const msgpack::object_kv& kv = map.via.map.ptr[i];
      if (kv.key.type == object_type::STR && StrOf(kv.key) == key) return &kv.val;
    }
    return nullptr;
  }

  // Points (*out)[i] at the value of field names[i]; absent fields stay null.
  // Arrays: field i < array_fields is element i + 1; extra trailing elements
  // are ignored. Maps: keys other than "type" and `names` are counted in
  // skipped_fields.
  void LocateFields(const msgpack::object& ev, std::span<const std::string_view> names,
                    size_t array_fields, Fields* out) {
    if (ev.type == object_type::ARRAY) {
      for (size_t i = 0; i < array_fields && i + 1 < ev.via.array.size; ++i) {
        (*out)[i] = &ev.via.array.ptr[i + 1];
      }
      return;
    }
    for (uint32_t k = 0; k < ev.via.map.size; ++k) {
      const msgpack::object_kv& kv = ev.via.map.ptr[k];
      if (kv.key.type != object_type::STR) {
        ++batch_->skipped_fields;
        continue;
      }
      const std::string_view key = StrOf(kv.key);
      bool known = key == "type";
      for (size_t i = 0; i < names.size() && !known; ++i) {
        if (key == names[i]) (*out)[i] = &kv.val, known = true;
      }
      if (!known) ++batch_->skipped_fields;
    }
  }

  static absl::Status Missing(int64_t index, std::string_view field) {
    return Fail(DecodeErrorReason::kWrongType, {index, field}, "missing");
  }

  absl::Status AddBlockStored(const Fields& f, int64_t index) {
    for (int i : {kHashes, kTokens, kBlockSize}) {
      if (f[i] == nullptr) return Missing(index, kStoredNames[i]);
    }
    BlockStored e;
    absl::Status s = ReadHashes(*f[kHashes], {index, "block_hashes"},
                                limits_.max_blocks_per_event, &e.block_hashes);
    if (!s.ok()) return s;
    if (!IsNil(f[kParent])) {
      uint64_t parent = 0;
      s = ReadHash(*f[kParent], {index, "parent_block_hash"}, -1, &parent);
      if (!s.ok()) return s;
      e.parent_block_hash = parent;
    }
    uint64_t block_size = 0;
    s = ReadUint(*f[kBlockSize], {index, "block_size"}, limits_.max_block_size, &block_size);
    if (!s.ok()) return s;
    e.block_size = static_cast<uint32_t>(block_size);
    const msgpack::object& tokens = *f[kTokens];
    if (tokens.type != object_type::ARRAY) return WrongType({index, "token_ids"}, "array", tokens);
    // No tokens at all is an offloaded chunk (vLLM's OffloadingConnector):
    // named by engine hashes only, of any block size.
    const uint64_t want = block_size * e.block_hashes.size();
    const bool offload = tokens.via.array.size == 0;
    if (!offload &&
        (tokens.via.array.size != want || (block_size == 0 && !e.block_hashes.empty()))) {
      return Fail(DecodeErrorReason::kBadTokenCount, {index, "token_ids"},
                  Cat(tokens.via.array.size, " tokens for ", e.block_hashes.size(),
                               " blocks of ", block_size));
    }
    s = ReadTokens(tokens, {index, "token_ids"}, &e.token_ids);
    if (s.ok()) s = ReadOptionalInt64(f[kLoraId], {index, "lora_id"}, &e.lora_id);
    if (s.ok()) s = ReadOptionalString(f[kMedium], {index, "medium"}, &e.medium);
    if (s.ok()) s = ReadOptionalString(f[kLoraName], {index, "lora_name"}, &e.lora_name);
    if (s.ok() && !IsNil(f[kExtraKeys])) s = ReadExtraKeys(*f[kExtraKeys], index, &e);
    if (s.ok()) s = ReadGroup(f[kGroupIdx], index, &e.group_idx);
    if (s.ok()) {
      s = ReadOptionalString(f[kSpecKind], {index, "kv_cache_spec_kind"}, &e.kv_cache_spec_kind);
    }
    if (s.ok() && !IsNil(f[kSlidingWindow])) {
      uint64_t window = 0;
      const Loc loc{index, "kv_cache_spec_sliding_window"};
      s = ReadUint(*f[kSlidingWindow], loc, std::numeric_limits<uint32_t>::max(), &window);
      if (s.ok() && window == 0) s = Fail(DecodeErrorReason::kBadValue, loc, "a window of 0 tokens");
      if (s.ok()) e.kv_cache_spec_sliding_window = static_cast<uint32_t>(window);
    }
    if (s.ok()) s = ReadOptionalString(f[kLocality], {index, "locality"}, &e.locality);
    if (s.ok()) s = ReadOptionalString(f[kOwnership], {index, "ownership"}, &e.ownership);
    if (s.ok()) s = ReadOptionalString(f[kSessionId], {index, "session_id"}, &e.session_id);
    if (s.ok()) s = ReadOptionalString(f[kCacheSalt], {index, "cache_salt"}, &e.cache_salt);
    if (!s.ok()) return s;
    batch_->events.emplace_back(std::move(e));
    return absl::OkStatus();
  }

  absl::Status ReadGroup(const msgpack::object* o, int64_t index, std::optional<uint32_t>* out) {
    if (IsNil(o)) return absl::OkStatus();
    uint64_t group = 0;
    absl::Status s = ReadUint(*o, {index, "group_idx"}, limits_.max_group_idx, &group);
    if (s.ok()) *out = static_cast<uint32_t>(group);
    return s;
  }

  // extra_keys: nil, or one entry per block, each nil or an array of items.
  absl::Status ReadExtraKeys(const msgpack::object& o, int64_t index, BlockStored* e) {
    const Loc loc{index, "extra_keys"};
    if (o.type != object_type::ARRAY) return WrongType(loc, "array or nil", o);
    if (o.via.array.size != e->block_hashes.size()) {
      return Fail(DecodeErrorReason::kBadValue, loc,
                  Cat(o.via.array.size, " entries for ", e->block_hashes.size(), " blocks"));
    }
    size_t budget = limits_.max_extra_keys_bytes;  // see ReadExtraKey
    e->extra_keys.resize(o.via.array.size);
    for (uint32_t i = 0; i < o.via.array.size; ++i) {
      const msgpack::object& entry = o.via.array.ptr[i];
      if (entry.type == object_type::NIL) continue;
      if (entry.type != object_type::ARRAY) {
        return Fail(DecodeErrorReason::kWrongType, loc,
                    Cat("block ", i, ": expected array or nil, got ", TypeName(entry)));
      }
      absl::Status s = ReadExtraKey(entry, loc, 0, &budget, &e->extra_keys[i]);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Takes `bytes` from an event's extra-keys budget.
  absl::Status Charge(size_t bytes, const Loc& loc, size_t* budget) {
    if (bytes > *budget) {
      return Fail(DecodeErrorReason::kTooLarge, loc,
                  Cat("more than ", limits_.max_extra_keys_bytes, " bytes of extra keys (strs, bytes and ",
                      kExtraKeyItemCost, " a list item)"));
    }
    *budget -= bytes;
    return absl::OkStatus();
  }

  // One item: str, int, bin, nil or an array of items nested at most
  // max_extra_keys_depth deep. Strs and bins draw their length on `budget`,
  // list items kExtraKeyItemCost each (before they are allocated), so a
  // payload of nils cannot become ExtraKeys many times its size.
  absl::Status ReadExtraKey(const msgpack::object& o, const Loc& loc, size_t depth,
                            size_t* budget, ExtraKey* out) {
    using Kind = ExtraKey::Kind;
    switch (o.type) {
      case object_type::NIL: out->kind = Kind::kNil; return absl::OkStatus();
      case object_type::POSITIVE_INTEGER:
        out->kind = Kind::kInt;
        out->number = static_cast<int64_t>(o.via.u64);
        out->number_unsigned = o.via.u64 > uint64_t{std::numeric_limits<int64_t>::max()};
        return absl::OkStatus();
      case object_type::NEGATIVE_INTEGER:
        out->kind = Kind::kInt;
        out->number = o.via.i64;
        return absl::OkStatus();
      case object_type::STR:
      case object_type::BIN: {
        const uint32_t n = o.type == object_type::STR ? o.via.str.size : o.via.bin.size;
        if (absl::Status s = Charge(n, loc, budget); !s.ok()) return s;
        out->kind = o.type == object_type::STR ? Kind::kStr : Kind::kBytes;
        out->bytes.assign(o.type == object_type::STR ? o.via.str.ptr : o.via.bin.ptr, n);
        return absl::OkStatus();
      }
      case object_type::ARRAY: {
        if (depth >= limits_.max_extra_keys_depth) {
          return Fail(DecodeErrorReason::kTooLarge, loc,
                      Cat("lists nested deeper than ", limits_.max_extra_keys_depth));
        }
        if (absl::Status s = Charge(size_t{o.via.array.size} * kExtraKeyItemCost, loc, budget); !s.ok()) return s;
        out->kind = Kind::kList;
        out->items.resize(o.via.array.size);
        for (uint32_t i = 0; i < o.via.array.size; ++i) {
          absl::Status s = ReadExtraKey(o.via.array.ptr[i], loc, depth + 1, budget, &out->items[i]);
          if (!s.ok()) return s;
        }
        return absl::OkStatus();
      }
      default:
        return WrongType(loc, "str, int, bytes, nil or array", o);
    }
  }

  absl::Status AddBlockRemoved(const Fields& f, int64_t index) {
    if (f[kRemovedHashes] == nullptr) return Missing(index, "block_hashes");
    BlockRemoved e;
    absl::Status s = ReadHashes(*f[kRemovedHashes], {index, "block_hashes"},
                                limits_.max_blocks_per_event, &e.block_hashes);
    if (s.ok()) s = ReadOptionalString(f[kRemovedMedium], {index, "medium"}, &e.medium);
    if (s.ok()) s = ReadGroup(f[kRemovedGroupIdx], index, &e.group_idx);
    if (s.ok()) s = ReadOptionalString(f[kRemovedLocality], {index, "locality"}, &e.locality);
    if (s.ok()) s = ReadOptionalString(f[kRemovedOwnership], {index, "ownership"}, &e.ownership);
    if (!s.ok()) return s;
    batch_->events.emplace_back(std::move(e));
    return absl::OkStatus();
  }

  const DecodeLimits& limits_;
  EventBatch* batch_;
};

// msgpack-c keeps strings, bins and exts as pointers into the payload.
bool ReferenceAll(object_type, size_t, void*) { return true; }

// Per-thread object zone, cleared after each payload: a decode of a typical
// payload allocates nothing for the object tree. clear() keeps only the
// initial chunk, so a huge payload does not pin memory.
constexpr size_t kZoneChunkBytes = 64 << 10;

class ZoneLease {
 public:
  ZoneLease() : zone_(Zone()) {}
  ~ZoneLease() { zone_.clear(); }
  ZoneLease(const ZoneLease&) = delete;
  ZoneLease& operator=(const ZoneLease&) = delete;
  msgpack::zone& zone() { return zone_; }

 private:
  static msgpack::zone& Zone() {
    thread_local msgpack::zone zone(kZoneChunkBytes);
    return zone;
  }
  msgpack::zone& zone_;
};

absl::StatusOr<EventBatch> Decode(std::string_view payload, const DecodeLimits& limits) {
  if (payload.size() > limits.max_payload_bytes) {
    return Fail(DecodeErrorReason::kTooLarge, {},
                Cat("payload of ", payload.size(), " bytes exceeds the limit of ",
                             limits.max_payload_bytes));
  }
  absl::Status s = ScanStructure(payload, limits.max_payload_bytes);
  if (!s.ok()) return s;
  const size_t n = payload.size();
  const msgpack::unpack_limit unpack_limit(n, n, n, n, n, kMaxDepth + 2);
  ZoneLease lease;
  const msgpack::object root = msgpack::unpack(lease.zone(), payload.data(), payload.size(),
                                               ReferenceAll, nullptr, unpack_limit);
  EventBatch batch;
  s = BatchDecoder(limits, &batch).DecodeBatch(root);
  if (!s.ok()) return s;
  return batch;
}

constexpr std::pair<DecodeErrorReason, std::string_view> kReasonNames[] = {
    {DecodeErrorReason::kTruncated, "truncated"},
    {DecodeErrorReason::kTrailingBytes, "trailing_bytes"},
    {DecodeErrorReason::kWrongType, "wrong_type"},
    {DecodeErrorReason::kBadTokenCount, "bad_token_count"},
    {DecodeErrorReason::kTooLarge, "too_large"},
    {DecodeErrorReason::kMalformed, "malformed"},
    {DecodeErrorReason::kBadValue, "bad_value"},
};
static_assert(std::size(kReasonNames) == kNumDecodeErrorReasons);

}  // namespace

std::string_view DecodeErrorReasonName(DecodeErrorReason reason) {
  for (const auto& [r, name] : kReasonNames) {
    if (r == reason) return name;
  }
  return "malformed";
}

DecodeErrorReason DecodeErrorReasonOf(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument) return DecodeErrorReason::kMalformed;
  const std::string_view msg(status.message().data(), status.message().size());
  const std::string_view head = msg.substr(0, msg.find(':'));
  for (const auto& [r, name] : kReasonNames) {
    if (head == name) return r;
  }
  return DecodeErrorReason::kMalformed;
}

absl::StatusOr<EventBatch> DecodeEventBatch(std::string_view payload, const DecodeLimits& limits) {
  // Pass 1 makes msgpack-c errors unreachable; these are a safety net.
  try {
    return Decode(payload, limits);
  } catch (const msgpack::insufficient_bytes& e) {
    return Fail(DecodeErrorReason::kTruncated, {}, e.what());
  } catch (const msgpack::size_overflow& e) {
    return Fail(DecodeErrorReason::kTooLarge, {}, e.what());
  } catch (const std::bad_alloc&) {
    return Fail(DecodeErrorReason::kTooLarge, {}, "out of memory");
  } catch (const std::exception& e) {
    return Fail(DecodeErrorReason::kMalformed, {}, e.what());
  } catch (...) {
    return Fail(DecodeErrorReason::kMalformed, {}, "unknown error");
  }
}

}  // namespace kvindex
