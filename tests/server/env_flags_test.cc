#include "server/env_flags.h"

#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(std::string, env_test_name, "default", "a string flag of this test");
ABSL_FLAG(int32_t, env_test_count, 1, "an int flag of this test");

namespace kvindex::server {
namespace {

using ::testing::HasSubstr;

class EnvFlagsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    unsetenv("KVTEST_ENV_TEST_NAME");
    unsetenv("KVTEST_ENV_TEST_COUNT");
    absl::SetFlag(&FLAGS_env_test_name, "default");
    absl::SetFlag(&FLAGS_env_test_count, 1);
  }
};

TEST_F(EnvFlagsTest, SetsFlagsOfThisFileFromPrefixedCapitalizedNames) {
  setenv("KVTEST_ENV_TEST_NAME", "from-env", 1);
  setenv("KVTEST_ENV_TEST_COUNT", "42", 1);
  ASSERT_TRUE(ApplyEnvFlagFallbacks("KVTEST_", __FILE__).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_env_test_name), "from-env");
  EXPECT_EQ(absl::GetFlag(FLAGS_env_test_count), 42);
}

TEST_F(EnvFlagsTest, UnsetVariablesLeaveDefaultsAndOtherFilesAreIgnored) {
  setenv("KVTEST_ENV_TEST_NAME", "x", 1);
  ASSERT_TRUE(ApplyEnvFlagFallbacks("KVTEST_", "some/other/file.cc").ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_env_test_name), "default");
  ASSERT_TRUE(ApplyEnvFlagFallbacks("OTHER_", __FILE__).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_env_test_count), 1);
}

TEST_F(EnvFlagsTest, BadValueNamesTheVariable) {
  setenv("KVTEST_ENV_TEST_COUNT", "lots", 1);
  const absl::Status status = ApplyEnvFlagFallbacks("KVTEST_", __FILE__);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("KVTEST_ENV_TEST_COUNT=lots"));
}

TEST(IsFlagFileOfTest, MatchesNormalizedSuffixOnPathBoundary) {
  EXPECT_TRUE(IsFlagFileOf("work/main/server/main.cc", "/work/main/server/main.cc"));
  EXPECT_TRUE(IsFlagFileOf("/work/main/server/main.cc", "/work/main/server/main.cc"));
  EXPECT_TRUE(IsFlagFileOf("server/main.cc", "server/main.cc"));
  EXPECT_FALSE(IsFlagFileOf("ain.cc", "/work/main/server/main.cc"));
  EXPECT_FALSE(IsFlagFileOf("", "/work/main/server/main.cc"));
  EXPECT_FALSE(IsFlagFileOf("client/main.cc", "/work/main/server/main.cc"));
}

}  // namespace
}  // namespace kvindex::server
