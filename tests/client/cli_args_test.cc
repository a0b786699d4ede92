#include "client/cli_args.h"

#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli_output.h"
#include "client/match_command.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/kvindex_server.h"

namespace kvindex {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

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

// `kvindex match`'s options reach the server: RunMatchCommand against an
// in-process kvindex-server whose index is filled directly.
class MatchCommandTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kBlockSize = 4;

  void SetUp() override {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<server::KvIndexServer>> server = server::KvIndexServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    PrefixIndex& index = server_->index();
    (void)index.Apply({"ns/gpu", 0}, {"m", ""}, Stored(4, "GPU"));
    (void)index.Apply({"ns/cpu", 1}, {"m", ""}, Stored(3, "CPU"));
    (void)index.Apply({"ns/disk", 0}, {"m", ""}, Stored(2, "DISK"));
    (void)index.Apply({"ns/adapted", 0}, {"m", ""}, Stored(4, "GPU", "sql-adapter"));
  }

  // A batch storing the first `blocks` blocks of Prompt() on `medium`.
  static EventBatch Stored(uint32_t blocks, const std::string& medium, std::optional<std::string> lora = std::nullopt) {
    BlockStored stored;
    for (uint32_t i = 0; i < blocks; ++i) stored.block_hashes.push_back(500 + i);
    stored.token_ids.assign(Prompt().begin(), Prompt().begin() + blocks * kBlockSize);
    stored.block_size = kBlockSize;
    stored.medium = medium;
    stored.lora_name = std::move(lora);
    EventBatch batch;
    batch.events.push_back(std::move(stored));
    return batch;
  }

  // Tokens 1..16: four blocks.
  static const std::vector<uint32_t>& Prompt() {
    static const std::vector<uint32_t> tokens = [] {
      std::vector<uint32_t> t;
      for (uint32_t i = 1; i <= 4 * kBlockSize; ++i) t.push_back(i);
      return t;
    }();
    return tokens;
  }

  struct Run {
    int exit_code = -1;
    std::string out, err;
    v1::MatchResponse response;  // parsed from `out` with --json
  };

  // `kvindex match --model m --tokens 1,...,16 ARGS... --server ADDR`, with --json unless `table`.
  Run Match(std::vector<std::string> args, bool table = false) {
    std::vector<std::string> words = {"--model", "m", "--tokens", absl::StrJoin(Prompt(), ","),
                                      "--server", absl::StrCat("127.0.0.1:", server_->port()), "--timeout", "20"};
    if (!table) words.push_back("--json");
    words.insert(words.end(), args.begin(), args.end());
    const std::vector<std::string_view> views(words.begin(), words.end());
    std::ostringstream out, err;
    Run run;
    run.exit_code = RunMatchCommand(views, out, err);
    run.out = out.str();
    run.err = err.str();
    if (run.exit_code == 0 && !table) {
      const auto status = google::protobuf::util::JsonStringToMessage(run.out, &run.response);
      EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << run.out;
    }
    return run;
  }

  // (pod, score) in answer order.
  static std::vector<std::pair<std::string, double>> Scores(const Run& run) {
    std::vector<std::pair<std::string, double>> out;
    for (const v1::PodMatch& pod : run.response.pods()) out.emplace_back(pod.pod(), pod.score());
    return out;
  }

  // The words of the table row naming `pod`.
  static std::vector<std::string> RowOf(const std::string& table, const std::string& pod) {
    for (absl::string_view line : absl::StrSplit(table, '\n')) {
      std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (!words.empty() && words[0] == pod) return words;
    }
    return {};
  }

  std::unique_ptr<server::KvIndexServer> server_;
};

TEST_F(MatchCommandTest, WeightSetsTierWeightsAndUnlistedTiersWeighOne) {
  Run run = Match({});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(Scores(run), ElementsAre(Pair("ns/gpu", 4.0), Pair("ns/cpu", 3.0), Pair("ns/disk", 2.0)));
  EXPECT_EQ(run.response.pods(1).dp_rank(), 1u);
  EXPECT_THAT(run.response.pods(1).blocks_by_medium(), UnorderedElementsAre(Pair("CPU", 3u)));

  // CPU above GPU; GPU and DISK unlisted weigh 1.0.
  run = Match({"--weight", "CPU=2"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(Scores(run), ElementsAre(Pair("ns/cpu", 6.0), Pair("ns/gpu", 4.0), Pair("ns/disk", 2.0)));

  // Several weights in one flag, "=value" form; CPU unlisted weighs 1.0.
  run = Match({"--weight=GPU=0.25,DISK=2.5"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(Scores(run), ElementsAre(Pair("ns/disk", 5.0), Pair("ns/cpu", 3.0), Pair("ns/gpu", 1.0)));

  // The table prints the same scores in the same order.
  run = Match({"--weight", "CPU=2"}, /*table=*/true);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const size_t cpu = run.out.find("ns/cpu"), gpu = run.out.find("ns/gpu"), disk = run.out.find("ns/disk");
  ASSERT_NE(disk, std::string::npos) << run.out;
  EXPECT_LT(cpu, gpu) << run.out;
  EXPECT_LT(gpu, disk) << run.out;
  EXPECT_THAT(RowOf(run.out, "ns/cpu"), ElementsAre("ns/cpu", "1", "3", "12", "CPU:3", "6")) << run.out;
  EXPECT_THAT(RowOf(run.out, "ns/gpu"), ElementsAre("ns/gpu", "0", "4", "16", "GPU:4", "4")) << run.out;
}

TEST_F(MatchCommandTest, MmAndCacheSaltSelectBlocksStoredWithThoseKeys) {
  // ns/image: an image (identifier with colons) over tokens 4..11, i.e. blocks 1 and 2.
  EventBatch image = Stored(4, "GPU");
  auto& stored = std::get<BlockStored>(image.events[0]);
  for (int64_t relative : {int64_t{-1}, int64_t{0}, int64_t{-4}, int64_t{-1}}) {
    ExtraKey entry;  // nil for blocks 0 and 3
    if (relative != -1) {
      entry = ExtraKey{.kind = ExtraKey::Kind::kList,
                       .items = {ExtraKey{.kind = ExtraKey::Kind::kList,
                                          .items = {ExtraKey{.kind = ExtraKey::Kind::kStr, .bytes = "uuid:a:1"},
                                                    ExtraKey{.kind = ExtraKey::Kind::kInt, .number = relative}}}}};
    }
    stored.extra_keys.push_back(entry);
  }
  (void)server_->index().Apply({"ns/image", 0}, {"m", ""}, image);
  EventBatch salted = Stored(4, "GPU");
  std::get<BlockStored>(salted.events[0]).cache_salt = "tenant";
  (void)server_->index().Apply({"ns/salted", 0}, {"m", ""}, salted);

  Run run = Match({"--mm", "uuid:a:1:4:8"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ASSERT_GE(run.response.pods_size(), 1);
  EXPECT_EQ(run.response.pods(0).pod(), "ns/image");
  EXPECT_EQ(run.response.pods(0).matched_blocks(), 4u);
  for (int i = 1; i < run.response.pods_size(); ++i) EXPECT_EQ(run.response.pods(i).matched_blocks(), 1u);

  run = Match({"--cache-salt", "tenant"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ASSERT_EQ(run.response.pods_size(), 1);
  EXPECT_EQ(run.response.pods(0).pod(), "ns/salted");
  EXPECT_EQ(run.response.pods(0).matched_blocks(), 4u);

  for (const char* bad : {"img:4", "img:x:8", "img:4:0", ":4:8", "img:4:8x"}) {
    run = Match({"--mm", bad});
    EXPECT_EQ(run.exit_code, 2) << bad;
    EXPECT_THAT(run.err, HasSubstr("--mm wants IDENTIFIER:OFFSET:LENGTH")) << bad;
  }
}

TEST_F(MatchCommandTest, BadWeightsAreUsageOrServerErrors) {
  for (const char* bad : {"GPU", "=1", "GPU=", "GPU=much", "GPU=1,CPU"}) {
    const Run run = Match({"--weight", bad});
    EXPECT_EQ(run.exit_code, 2) << bad;
    EXPECT_THAT(run.err, HasSubstr("--weight wants MEDIUM=NUMBER")) << bad;
  }
  // A negative weight parses; the server refuses it.
  const Run run = Match({"--weight", "GPU=-1"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(run.err, HasSubstr("medium_weights[\"GPU\"] must be finite and >= 0"));
}

TEST_F(MatchCommandTest, PodsFiltersTheCandidates) {
  Run run = Match({"--pods", "ns/disk"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(Scores(run), ElementsAre(Pair("ns/disk", 2.0)));

  run = Match({"--pods", "ns/disk,ns/gpu,"});  // a list; empty items are skipped
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(Scores(run), ElementsAre(Pair("ns/gpu", 4.0), Pair("ns/disk", 2.0)));

  run = Match({"--pods", "ns/nobody"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.response.pods(), IsEmpty());
  EXPECT_EQ(run.response.query_blocks(), 4u);
}

TEST_F(MatchCommandTest, LoraSelectsTheAdaptersBlocks) {
  Run run = Match({"--lora", "sql-adapter"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ASSERT_EQ(run.response.pods_size(), 1);
  EXPECT_EQ(run.response.pods(0).pod(), "ns/adapted");
  EXPECT_EQ(run.response.pods(0).matched_blocks(), 4u);
  EXPECT_EQ(run.response.pods(0).matched_tokens(), 4 * kBlockSize);

  run = Match({"--lora", "other-adapter"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.response.pods(), IsEmpty());

  // Without --lora the base model's blocks match, not the adapter's.
  run = Match({});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  for (const v1::PodMatch& pod : run.response.pods()) EXPECT_NE(pod.pod(), "ns/adapted");

  // --lora, --pods and --weight together; the table names the adapter.
  run = Match({"--lora", "sql-adapter", "--pods", "ns/adapted", "--weight", "GPU=0.5"}, /*table=*/true);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("model m (lora sql-adapter): block size 4, 4 full blocks in the query, 1 pod matches"));
  EXPECT_THAT(RowOf(run.out, "ns/adapted"), ElementsAre("ns/adapted", "0", "4", "16", "GPU:4", "2")) << run.out;
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
