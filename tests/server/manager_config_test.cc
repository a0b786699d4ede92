#include "server/manager_config.h"

#include <map>
#include <string>

#include "absl/status/status.h"
#include "core/ingest/subscription_manager.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

TEST(ManagerConfigTest, SyncEnabledFromEnvironment) {
  std::map<std::string, std::string> env;
  auto lookup = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  ManagerOptions options;
  EXPECT_TRUE(ApplyManagerEnv(&options, lookup).ok());
  EXPECT_TRUE(options.sync_enabled);  // enabled by default
  env[kSyncEnabledEnv] = "false";
  EXPECT_TRUE(ApplyManagerEnv(&options, lookup).ok());
  EXPECT_FALSE(options.sync_enabled);
  env[kSyncEnabledEnv] = "TRUE";
  EXPECT_TRUE(ApplyManagerEnv(&options, lookup).ok());
  EXPECT_TRUE(options.sync_enabled);
  env[kSyncEnabledEnv] = "0";
  EXPECT_TRUE(ApplyManagerEnv(&options, lookup).ok());
  EXPECT_FALSE(options.sync_enabled);
  env[kSyncEnabledEnv] = "nope";
  absl::Status status = ApplyManagerEnv(&options, lookup);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED=\"nope\" is not a boolean (true/false)");
  EXPECT_FALSE(options.sync_enabled);  // untouched
}

}  // namespace
}  // namespace kvindex
