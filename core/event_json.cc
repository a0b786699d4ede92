#include "core/event_json.h"

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
  return out;
}

Json ToJson(const BlockRemoved& e) {
  Json out;
  out["type"] = "BlockRemoved";
  out["block_hashes"] = Hashes(e.block_hashes);
  out["medium"] = OrNull(e.medium);
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
  // Engines may send invalid UTF-8 in medium or lora_name: replace, never throw.
  return doc.dump(indent, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

}  // namespace kvindex
