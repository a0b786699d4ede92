#include "core/events/event_json.h"

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvindex {
namespace {

// ordered_json keeps fields in insertion order, i.e. the wire order.
using Json = nlohmann::ordered_json;

// "0x" + 16 lower-case hex digits.
std::string HashHex(uint64_t hash) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(18, '0');
  out[1] = 'x';
  for (int i = 17; i >= 2; --i, hash >>= 4) out[i] = kDigits[hash & 0xf];
  return out;
}

Json Hashes(const std::vector<uint64_t>& hashes) {
  Json out = Json::array();
  for (uint64_t h : hashes) out.push_back(HashHex(h));
  return out;
}

template <typename T>
Json OrNull(const std::optional<T>& v) {
  return v.has_value() ? Json(*v) : Json(nullptr);
}

// Optional 2026 fields are printed under their wire name only when sent.
template <typename T>
void PutIfSent(Json& out, const char* name, const std::optional<T>& v) {
  if (v.has_value()) out[name] = *v;
}

// "0x" + the bytes in lower-case hex.
std::string BytesHex(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out = "0x";
  out.reserve(2 + 2 * bytes.size());
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 0xf]);
  }
  return out;
}

Json ToJson(const ExtraKey& key) {
  switch (key.kind) {
    case ExtraKey::Kind::kNil: return Json(nullptr);
    case ExtraKey::Kind::kInt:
      return key.number_unsigned ? Json(static_cast<uint64_t>(key.number)) : Json(key.number);
    case ExtraKey::Kind::kStr: return Json(key.bytes);
    case ExtraKey::Kind::kBytes: return Json(BytesHex(key.bytes));
    case ExtraKey::Kind::kList: {
      Json out = Json::array();
      for (const ExtraKey& item : key.items) out.push_back(ToJson(item));
      return out;
    }
  }
  return Json(nullptr);
}

Json ToJson(const BlockStored& e) {
  Json out;
  out["type"] = "BlockStored";
  out["block_hashes"] = Hashes(e.block_hashes);
  out["parent_block_hash"] =
      e.parent_block_hash.has_value() ? Json(HashHex(*e.parent_block_hash)) : Json(nullptr);
  out["token_ids"] = e.token_ids;
  out["block_size"] = e.block_size;
  out["lora_id"] = OrNull(e.lora_id);
  out["lora_name"] = OrNull(e.lora_name);
  out["medium"] = OrNull(e.medium);
  if (!e.extra_keys.empty()) {
    Json keys = Json::array();
    for (const ExtraKey& entry : e.extra_keys) keys.push_back(ToJson(entry));
    out["extra_keys"] = std::move(keys);
  }
  PutIfSent(out, "group_idx", e.group_idx);
  PutIfSent(out, "kv_cache_spec_kind", e.kv_cache_spec_kind);
  PutIfSent(out, "kv_cache_spec_sliding_window", e.kv_cache_spec_sliding_window);
  PutIfSent(out, "locality", e.locality);
  PutIfSent(out, "ownership", e.ownership);
  PutIfSent(out, "session_id", e.session_id);
  PutIfSent(out, "cache_salt", e.cache_salt);
  return out;
}

Json ToJson(const BlockRemoved& e) {
  Json out;
  out["type"] = "BlockRemoved";
  out["block_hashes"] = Hashes(e.block_hashes);
  out["medium"] = OrNull(e.medium);
  PutIfSent(out, "group_idx", e.group_idx);
  PutIfSent(out, "locality", e.locality);
  PutIfSent(out, "ownership", e.ownership);
  return out;
}

Json ToJson(const AllBlocksCleared&) {
  Json out;
  out["type"] = "AllBlocksCleared";
  return out;
}

}  // namespace

std::string EventBatchToJson(const EventBatch& batch, int indent) {
  Json doc;
  doc["ts"] = batch.ts;  // non-finite values render as null
  doc["dp_rank"] = OrNull(batch.dp_rank);
  Json events = Json::array();
  for (const Event& event : batch.events) {
    events.push_back(std::visit([](const auto& e) { return ToJson(e); }, event));
  }
  doc["events"] = std::move(events);
  doc["skipped_events"] = batch.skipped_events;
  doc["skipped_fields"] = batch.skipped_fields;
  if (!batch.bad_events.empty()) {
    Json bad = Json::array();
    for (const BadEvent& b : batch.bad_events) bad.push_back({{"index", b.index}, {"error", b.message}});
    doc["bad_events"] = std::move(bad);
    uint64_t total = 0;
    for (uint32_t n : batch.bad_events_by_reason) total += n;
    if (total > batch.bad_events.size()) doc["bad_events_not_listed"] = total - batch.bad_events.size();
  }
  // Engines may send invalid UTF-8 in medium or lora_name: replace, never throw.
  return doc.dump(indent, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

}  // namespace kvindex
