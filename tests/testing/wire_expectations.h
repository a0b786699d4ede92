#pragma once

// How a decoded vector is compared with ../shared/wire/expected.json: the
// 2026 optional fields (group_idx, extra_keys, locality, ...) are printed
// whenever the engine sent them, while expected.json lists them only where
// they carry something; every field expected.json lists must match exactly.

#include <string_view>

#include <nlohmann/json.hpp>

namespace kvindex::testutil {

inline constexpr std::string_view kOptionalEventFields[] = {
    "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window", "extra_keys",
    "locality",  "ownership",          "session_id",                   "cache_salt"};

// `got_events` without the optional fields that the same event of
// `want_events` does not list (events beyond want's are left whole).
inline nlohmann::json EventsAsListed(const nlohmann::json& got_events, const nlohmann::json& want_events) {
  nlohmann::json out = got_events;
  for (size_t i = 0; i < out.size() && i < want_events.size(); ++i) {
    for (std::string_view field : kOptionalEventFields) {
      const std::string key(field);
      if (out[i].is_object() && !want_events[i].contains(key)) out[i].erase(key);
    }
  }
  return out;
}

}  // namespace kvindex::testutil
