#include "server/bearer_auth.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/subprocess.h"

namespace kvindex::server {
namespace {

using ::testing::HasSubstr;

TEST(BearerAuthTest, NoTokenAllowsEverything) {
  const BearerAuth auth;
  EXPECT_FALSE(auth.enabled());
  EXPECT_TRUE(auth.Check("", /*sync_pods=*/true).ok());
  EXPECT_TRUE(auth.Check("Bearer anything", /*sync_pods=*/false).ok());
}

TEST(BearerAuthTest, TokenGuardsSyncPodsOnlyUnlessAllRpcs) {
  const BearerAuth sync_only("tok", /*all_rpcs=*/false);
  EXPECT_TRUE(sync_only.Check("", /*sync_pods=*/false).ok());
  EXPECT_EQ(sync_only.Check("", /*sync_pods=*/true).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(sync_only.Check("Bearer tok", /*sync_pods=*/true).ok());

  const BearerAuth all("tok", /*all_rpcs=*/true);
  EXPECT_EQ(all.Check("", /*sync_pods=*/false).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(all.Check("Bearer tok", /*sync_pods=*/false).ok());
}

TEST(BearerAuthTest, OnlyTheExactBearerTokenPasses) {
  const BearerAuth auth("s3cr3t", /*all_rpcs=*/true);
  EXPECT_TRUE(auth.Check("Bearer s3cr3t", true).ok());
  EXPECT_TRUE(auth.Check("bearer s3cr3t", true).ok());
  EXPECT_TRUE(auth.Check("BEARER  s3cr3t ", true).ok());
  for (const char* bad : {"", "s3cr3t", "Bearer", "Bearer ", "Bearer s3cr3", "Bearer s3cr3t!", "Bearer S3CR3T",
                          "Basic s3cr3t", "Bearers3cr3t", "Bearer s3cr3ts3cr3t"}) {
    const absl::Status status = auth.Check(bad, true);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_THAT(status.message(), ::testing::Not(HasSubstr("s3cr3t"))) << "the token must not leak";
  }
}

TEST(BearerAuthTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcabc"));
  EXPECT_FALSE(ConstantTimeEquals("abcabc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", ""));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(BearerAuthTest, FromFileTrimsAndRefusesEmptyOrMissing) {
  absl::StatusOr<BearerAuth> auth =
      BearerAuth::FromFile(kvindex::testing::WriteTempFile("token", "  tok-1\n"), /*all_rpcs=*/false);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE(auth->enabled());
  EXPECT_TRUE(auth->Check("Bearer tok-1", true).ok());

  EXPECT_EQ(BearerAuth::FromFile(kvindex::testing::WriteTempFile("empty", " \n"), false).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BearerAuth::FromFile("/nonexistent/token", false).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvindex::server
