#pragma once

// Configuration of the SubscriptionManager from the environment, as the seed
// reads it: AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED=false disables KV event
// sync (it is enabled by default).

#include <functional>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "core/ingest/subscription_manager.h"

namespace kvindex {

inline constexpr char kSyncEnabledEnv[] = "AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED";

// Go's strconv.ParseBool: 1 t T TRUE true True / 0 f F FALSE false False;
// nullopt for anything else.
std::optional<bool> ParseEnvBool(std::string_view value);

// Sets options->sync_enabled from kSyncEnabledEnv when it is set. An unset
// variable leaves options untouched; an unparsable one too, and returns
// INVALID_ARGUMENT naming the variable and value. `getenv` looks a name up
// (nullptr: unset); the one-argument form reads the process environment.
[[nodiscard]] absl::Status ApplyManagerEnv(ManagerOptions* options,
                             const std::function<const char*(const char*)>& getenv);
[[nodiscard]] absl::Status ApplyManagerEnv(ManagerOptions* options);

}  // namespace kvindex
