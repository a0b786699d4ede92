#include "client/cli_args.h"

#include <sstream>
#include <string_view>
#include <vector>

#include "client/cli_output.h"
#include "client/match_command.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<cli::CliArgs> Parse(std::vector<std::string_view> args) {
  return cli::ParseWithConnectionFlags(args, {"--model", "-f"}, {"--dry"});
}

TEST(CliArgsTest, ValuesSwitchesAndPositionals) {
  absl::StatusOr<cli::CliArgs> args =
      Parse({"apply", "--model=m", "-f", "x.txt", "--dry", "--server", "h:1", "--json", "more"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->Get("--model"), "m");
  EXPECT_EQ(args->Get("-f"), "x.txt");
  EXPECT_EQ(args->Get("--server"), "h:1");
  EXPECT_TRUE(args->Has("--dry"));
  EXPECT_TRUE(args->Has("--json"));
  EXPECT_FALSE(args->Has("--token"));
  EXPECT_EQ(args->Get("--token"), std::nullopt);
  EXPECT_THAT(args->positional(), ElementsAre("apply", "more"));
  // "-" alone is a value (stdin), not an option.
  EXPECT_EQ(Parse({"-f", "-"})->Get("-f"), "-");
}

TEST(CliArgsTest, Errors) {
  EXPECT_THAT(Parse({"--nope"}).status().message(), HasSubstr("unknown option --nope"));
  EXPECT_THAT(Parse({"--model"}).status().message(), HasSubstr("needs a value"));
  EXPECT_FALSE(Parse({"--dry=yes"}).ok());
}

TEST(CliArgsTest, ClientOptionsFromFlags) {
  absl::StatusOr<cli::CliArgs> args = Parse({"--server", "h:9", "--token", "t", "--tls-ca-file", "ca.pem",
                                             "--tls-server-name", "kvindex.local", "--timeout", "2.5"});
  ASSERT_TRUE(args.ok());
  absl::StatusOr<client::ClientOptions> options = cli::ClientOptionsFromArgs(*args);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->server, "h:9");
  EXPECT_EQ(options->token, "t");
  EXPECT_EQ(options->tls_ca_file, "ca.pem");
  EXPECT_EQ(options->tls_server_name, "kvindex.local");
  EXPECT_EQ(options->timeout, absl::Milliseconds(2500));
  EXPECT_FALSE(cli::ClientOptionsFromArgs(*Parse({"--timeout", "0"})).ok());
  EXPECT_FALSE(cli::ClientOptionsFromArgs(*Parse({"--timeout", "soon"})).ok());
  EXPECT_EQ(cli::ClientOptionsFromArgs(*Parse({"--token-file", "/nonexistent"})).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TokenListTest, ParsesCommaSpaceAndJsonLists) {
  EXPECT_THAT(*ParseTokenList("1,2,3"), ElementsAre(1u, 2u, 3u));
  EXPECT_THAT(*ParseTokenList("[1, 2,\n3]\n"), ElementsAre(1u, 2u, 3u));
  EXPECT_THAT(*ParseTokenList(""), ElementsAre());
  EXPECT_THAT(*ParseTokenList("4294967295"), ElementsAre(4294967295u));
  EXPECT_THAT(ParseTokenList("1,x").status().message(), HasSubstr("'x'"));
  EXPECT_FALSE(ParseTokenList("4294967296").ok());
  EXPECT_FALSE(ParseTokenList("-1").ok());
}

TEST(TokenListTest, HashesAreDecimalOrHex) {
  EXPECT_THAT(*ParseHashList("1, 0x10,0XfF ,18446744073709551615"),
              ElementsAre(1u, 16u, 255u, 18446744073709551615u));
  EXPECT_FALSE(ParseHashList("0xzz").ok());
  EXPECT_FALSE(ParseHashList("18446744073709551616").ok());
}

TEST(TableTest, AlignsColumns) {
  cli::Table table({"POD", "N"});
  table.AddRow({"default/a", "1"});
  table.AddRow({"b", "100", "dropped"});
  table.AddRow({"c"});
  std::ostringstream out;
  table.Print(out);
  EXPECT_EQ(out.str(),
            "POD        N\n"
            "default/a  1\n"
            "b          100\n"
            "c          \n");
}

}  // namespace
}  // namespace kvindex
