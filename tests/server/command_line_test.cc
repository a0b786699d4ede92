#include "server/command_line.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(int32_t, cl_test_count, 1, "an int flag of this test");
ABSL_FLAG(bool, cl_test_switch, false, "a bool flag of this test");

namespace kvindex::server {
namespace {

using ::testing::HasSubstr;

absl::Status Check(std::vector<std::string> args) {
  args.insert(args.begin(), "prog");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return CheckCommandLineFlags(static_cast<int>(argv.size()), argv.data());
}

TEST(CheckCommandLineFlagsTest, AcceptsEveryFormAbslAccepts) {
  EXPECT_TRUE(Check({"--cl_test_count=3", "-cl_test_count", "4", "--cl_test_switch", "--nocl_test_switch",
                     "--cl_test_switch=false", "positional", "--", "--not_a_flag"})
                  .ok());
  EXPECT_TRUE(Check({"--help"}).ok());  // absl prints the help
  EXPECT_TRUE(Check({"--flagfile", "f", "--version"}).ok());
  EXPECT_TRUE(Check({"--undefok=cl_gone,other", "--cl_gone=1", "--nocl_gone"}).ok());
  EXPECT_TRUE(Check({"--cl_test_count=1", "--=x", "--anything"}).ok());  // "--=x" ends the flags, as in absl
}

TEST(CheckCommandLineFlagsTest, NamesTheFirstBadFlag) {
  for (const auto& [args, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--cl_test_count=abc"}, "--cl_test_count=abc: "},
           {{"--cl_test_count", "--cl_test_switch"}, "--cl_test_count=--cl_test_switch: "},
           {{"--cl_test_count"}, "--cl_test_count needs a value"},
           {{"--cl_test_switch=perhaps"}, "--cl_test_switch=perhaps: "},
           {{"--nocl_test_count"}, "unknown flag --nocl_test_count"},
           {{"--cl_test_count=1", "--cl_test_nope"}, "unknown flag --cl_test_nope"},
           {{"--help", "--cl_test_count=x"}, "--cl_test_count=x: "},
           {{"--helper"}, "unknown flag --helper"},
           {{"--nocl_test_switch=1"}, "--nocl_test_switch takes no value"},
       }) {
    const absl::Status status = Check(args);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << args[0];
    EXPECT_THAT(status.message(), HasSubstr(message)) << args[0];
  }
}

}  // namespace
}  // namespace kvindex::server
