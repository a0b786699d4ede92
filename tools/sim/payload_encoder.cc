#include "tools/sim/payload_encoder.h"

#include <msgpack.hpp>

#include <algorithm>
#include <cstring>
#include <variant>

#include "absl/strings/str_cat.h"
#include "tools/sim/engine_hash.h"

namespace kvindex::sim {
namespace {

// msgpack-c output stream into a std::string sized ahead (msgpack-c writes a
// few bytes at a time; std::string::append per write costs more than packing).
class StringStream {
 public:
  explicit StringStream(size_t reserve) { out_.resize(reserve); }
  void write(const char* data, size_t size) {
    if (size_ + size > out_.size()) out_.resize(std::max(out_.size() * 2, size_ + size));
    std::memcpy(out_.data() + size_, data, size);
    size_ += size;
  }
  std::string Take() && {
    out_.resize(size_);
    return std::move(out_);
  }

 private:
  std::string out_;
  size_t size_ = 0;
};

// Bytes `batch` will probably take, so that the stream rarely grows.
size_t EstimateSize(const EventBatch& batch) {
  size_t n = 32;
  for (const Event& e : batch.events) {
    n += 160;
    if (const auto* s = std::get_if<BlockStored>(&e)) n += 36 * s->block_hashes.size() + 5 * s->token_ids.size();
    if (const auto* r = std::get_if<BlockRemoved>(&e)) n += 36 * r->block_hashes.size();
  }
  return n;
}

using Packer = msgpack::packer<StringStream>;

constexpr char kFullAttention[] = "full_attention";

void PackStr(Packer& pk, std::string_view s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

void PackOptStr(Packer& pk, const std::optional<std::string>& s) {
  if (s.has_value()) {
    PackStr(pk, *s);
  } else {
    pk.pack_nil();
  }
}

class EventPacker {
 public:
  EventPacker(Packer& pk, PayloadLayout layout, HashEncoding hashes) : pk_(pk), layout_(layout), hashes_(hashes) {}

  // vLLM's layouts carry extra_keys (nil per block when none), group_idx (0
  // when the event names none) and kv_cache_spec_kind ("full_attention"), as
  // vLLM 2026 sends them; the map omits the other fields left nil. The array
  // has the 11 fields in wire order; SGLang's stops after lora_name.
  void operator()(const BlockStored& e) {
    const bool map = layout_ == PayloadLayout::kMap;
    if (map) {
      const int optional = e.kv_cache_spec_sliding_window.has_value() + e.locality.has_value() +
                           e.ownership.has_value() + e.session_id.has_value() + e.cache_salt.has_value();
      pk_.pack_map(11 + optional);
      Key("type");
    } else {
      pk_.pack_array(layout_ == PayloadLayout::kSglang ? 8 : 12);
    }
    PackStr(pk_, "BlockStored");
    Key("block_hashes");
    Hashes(e.block_hashes);
    Key("parent_block_hash");
    if (e.parent_block_hash.has_value()) {
      Hash(*e.parent_block_hash);
    } else {
      pk_.pack_nil();
    }
    Key("token_ids");
    pk_.pack_array(static_cast<uint32_t>(e.token_ids.size()));
    for (uint32_t t : e.token_ids) pk_.pack_uint32(t);
    Key("block_size");
    pk_.pack_uint32(e.block_size);
    Key("lora_id");
    if (e.lora_id.has_value()) {
      pk_.pack_int64(*e.lora_id);
    } else {
      pk_.pack_nil();
    }
    Key("medium");
    PackOptStr(pk_, e.medium);
    Key("lora_name");
    PackOptStr(pk_, e.lora_name);
    if (layout_ == PayloadLayout::kSglang) return;
    Key("extra_keys");
    pk_.pack_array(static_cast<uint32_t>(e.block_hashes.size()));
    for (size_t i = 0; i < e.block_hashes.size(); ++i) {
      if (i < e.extra_keys.size()) {
        PackExtraKey(e.extra_keys[i]);
      } else {
        pk_.pack_nil();
      }
    }
    Key("group_idx");
    pk_.pack_uint32(e.group_idx.value_or(0));
    Key("kv_cache_spec_kind");
    PackStr(pk_, e.kv_cache_spec_kind.value_or(kFullAttention));
    Optional("kv_cache_spec_sliding_window", e.kv_cache_spec_sliding_window);
    if (!map) return;
    Optional("locality", e.locality);
    Optional("ownership", e.ownership);
    Optional("session_id", e.session_id);
    Optional("cache_salt", e.cache_salt);
  }

  // The map carries group_idx (0 when the event names none); the array only when set.
  void operator()(const BlockRemoved& e) {
    const bool map = layout_ == PayloadLayout::kMap;
    const bool array_group = layout_ == PayloadLayout::kArray && e.group_idx.has_value();
    if (map) {
      pk_.pack_map(4 + e.locality.has_value() + e.ownership.has_value());
      Key("type");
    } else {
      pk_.pack_array(array_group ? 4 : 3);
    }
    PackStr(pk_, "BlockRemoved");
    Key("block_hashes");
    Hashes(e.block_hashes);
    Key("medium");
    PackOptStr(pk_, e.medium);
    if (array_group) pk_.pack_uint32(*e.group_idx);
    if (!map) return;
    Key("group_idx");
    pk_.pack_uint32(e.group_idx.value_or(0));
    Optional("locality", e.locality);
    Optional("ownership", e.ownership);
  }

  void operator()(const AllBlocksCleared&) {
    if (layout_ == PayloadLayout::kMap) {
      pk_.pack_map(1);
      Key("type");
    } else {
      pk_.pack_array(1);
    }
    PackStr(pk_, "AllBlocksCleared");
  }

 private:
  // A map key; nothing in the array layouts.
  void Key(std::string_view key) {
    if (layout_ == PayloadLayout::kMap) PackStr(pk_, key);
  }

  // A 2026 field: in a map only when set; in an array, nil when unset.
  void Optional(std::string_view key, const std::optional<std::string>& v) {
    if (layout_ == PayloadLayout::kMap && !v.has_value()) return;
    Key(key);
    PackOptStr(pk_, v);
  }
  void Optional(std::string_view key, const std::optional<uint32_t>& v) {
    if (layout_ == PayloadLayout::kMap && !v.has_value()) return;
    Key(key);
    if (v.has_value()) {
      pk_.pack_uint32(*v);
    } else {
      pk_.pack_nil();
    }
  }

  void PackExtraKey(const ExtraKey& key) {
    switch (key.kind) {
      case ExtraKey::Kind::kNil: pk_.pack_nil(); return;
      case ExtraKey::Kind::kInt:
        if (key.number_unsigned) {
          pk_.pack_uint64(static_cast<uint64_t>(key.number));
        } else {
          pk_.pack_int64(key.number);
        }
        return;
      case ExtraKey::Kind::kStr: PackStr(pk_, key.bytes); return;
      case ExtraKey::Kind::kBytes:
        pk_.pack_bin(static_cast<uint32_t>(key.bytes.size()));
        pk_.pack_bin_body(key.bytes.data(), static_cast<uint32_t>(key.bytes.size()));
        return;
      case ExtraKey::Kind::kList:
        pk_.pack_array(static_cast<uint32_t>(key.items.size()));
        for (const ExtraKey& item : key.items) PackExtraKey(item);
        return;
    }
  }

  void Hash(uint64_t h) {
    if (hashes_ == HashEncoding::kBytes) {
      const auto digest = EngineHashDigest(h);
      pk_.pack_bin(static_cast<uint32_t>(digest.size()));
      pk_.pack_bin_body(reinterpret_cast<const char*>(digest.data()), static_cast<uint32_t>(digest.size()));
    } else if (layout_ == PayloadLayout::kSglang) {
      pk_.pack_int64(static_cast<int64_t>(h));
    } else {
      pk_.pack_uint64(h);
    }
  }

  void Hashes(const std::vector<uint64_t>& hashes) {
    pk_.pack_array(static_cast<uint32_t>(hashes.size()));
    for (uint64_t h : hashes) Hash(h);
  }

  Packer& pk_;
  const PayloadLayout layout_;
  const HashEncoding hashes_;
};

}  // namespace

absl::StatusOr<PayloadLayout> ParsePayloadLayout(std::string_view name) {
  if (name == "map") return PayloadLayout::kMap;
  if (name == "array") return PayloadLayout::kArray;
  if (name == "sglang") return PayloadLayout::kSglang;
  return absl::InvalidArgumentError(absl::StrCat("unknown payload layout \"", std::string(name), "\" (map, array, sglang)"));
}

absl::StatusOr<HashEncoding> ParseHashEncoding(std::string_view name) {
  if (name == "int") return HashEncoding::kInt;
  if (name == "bytes") return HashEncoding::kBytes;
  return absl::InvalidArgumentError(absl::StrCat("unknown hash encoding \"", std::string(name), "\" (int, bytes)"));
}

std::string_view PayloadLayoutName(PayloadLayout layout) {
  switch (layout) {
    case PayloadLayout::kMap: return "map";
    case PayloadLayout::kArray: return "array";
    case PayloadLayout::kSglang: return "sglang";
  }
  return "?";
}

std::string_view HashEncodingName(HashEncoding hashes) {
  return hashes == HashEncoding::kBytes ? "bytes" : "int";
}

std::string EncodePayload(const EventBatch& batch, PayloadLayout layout, HashEncoding hashes) {
  StringStream stream(EstimateSize(batch));
  Packer pk(stream);
  pk.pack_array(3);
  pk.pack_double(batch.ts);
  pk.pack_array(static_cast<uint32_t>(batch.events.size()));
  EventPacker events(pk, layout, hashes);
  for (const Event& e : batch.events) std::visit(events, e);
  if (batch.dp_rank.has_value()) {
    pk.pack_int64(*batch.dp_rank);
  } else {
    pk.pack_nil();
  }
  return std::move(stream).Take();
}

}  // namespace kvindex::sim
