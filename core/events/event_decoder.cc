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

#include "core/events/internal/decode_error.h"
#include "core/events/internal/msgpack_read.h"
#include "core/events/internal/msgpack_scan.h"

// Decoding runs in two passes over the payload:
//  1. ScanMsgpack() (internal/msgpack_scan.h) walks the raw msgpack bytes
//     without allocating. It
//     proves the payload is exactly one complete msgpack value with nesting
//     <= kMaxMsgpackDepth and no declared size above max_payload_bytes, and it
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

constexpr size_t kMaxDepth = kMaxMsgpackDepth;
// A data-parallel rank r publishes on port + r, so ranks fit a port number.
constexpr uint64_t kMaxDpRank = 65535;
// Events reserved ahead per batch (an event may be a single byte).
constexpr size_t kReserveEvents = 4096;
// Bad events listed with their message per batch; the rest are only counted.
constexpr size_t kMaxBadEventDetails = 16;
// What one extra-keys list item costs of DecodeLimits::max_extra_keys_bytes.
constexpr size_t kExtraKeyItemCost = 16;

using msgpack::type::object_type;
using namespace decoding;  // NOLINT: the decoder is written in these reads

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
  absl::Status s = ScanMsgpack(payload, limits.max_payload_bytes);
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
