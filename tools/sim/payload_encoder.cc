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

  void operator()(const BlockStored& e) {
    const bool map = layout_ == PayloadLayout::kMap;
    if (map) {
      pk_.pack_map(11);
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
    for (size_t i = 0; i < e.block_hashes.size(); ++i) pk_.pack_nil();
    Key("group_idx");
    pk_.pack_uint32(0);
    Key("kv_cache_spec_kind");
    PackStr(pk_, kFullAttention);
    if (!map) pk_.pack_nil();  // kv_cache_spec_sliding_window
  }

  void operator()(const BlockRemoved& e) {
    if (layout_ == PayloadLayout::kMap) {
      pk_.pack_map(4);
      Key("type");
    } else {
      pk_.pack_array(3);
    }
    PackStr(pk_, "BlockRemoved");
    Key("block_hashes");
    Hashes(e.block_hashes);
    Key("medium");
    PackOptStr(pk_, e.medium);
    if (layout_ == PayloadLayout::kMap) {
      Key("group_idx");
      pk_.pack_uint32(0);
    }
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
