// Runs the built `kvindex` binary as a real process: `kvindex decode FILE...`.

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/wire_expectations.h"

namespace kvindex {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;
using Json = nlohmann::json;

const std::filesystem::path kWireDir = KVINDEX_WIRE_DIR;
const std::filesystem::path kBinary = std::filesystem::path(KVINDEX_BIN_DIR) / "kvindex";

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::filesystem::path& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

std::filesystem::path Vector(const std::string& name) {
  return kWireDir / "vectors" / (name + ".msgpack");
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs kvindex with `args` (and `stdin_file` as stdin, if given).
Result RunKvindex(const std::vector<std::string>& args, const std::string& stdin_file = "") {
  // ctest may run tests in parallel: one file pair per test and call.
  static int calls = 0;
  const std::string base = std::filesystem::path(testing::TempDir()) /
                           (std::string("kvindex_") +
                            testing::UnitTest::GetInstance()->current_test_info()->name() + "_" +
                            std::to_string(++calls));
  const std::string out_path = base + ".out";
  const std::string err_path = base + ".err";
  std::string cmd = Quote(kBinary.string());
  for (const std::string& a : args) cmd += " " + Quote(a);
  cmd += " >" + Quote(out_path) + " 2>" + Quote(err_path);
  cmd += " <" + Quote(stdin_file.empty() ? "/dev/null" : stdin_file);
  const int status = std::system(cmd.c_str());
  Result r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out_path);
  r.err = ReadFile(err_path);
  return r;
}

Json Expected() { return Json::parse(ReadFile(kWireDir / "expected.json")); }

std::vector<std::string> VectorNames() {
  std::vector<std::string> out;
  const Json expected = Expected();
  for (const auto& [name, unused] : expected.items()) {
    if (!name.starts_with("_")) out.push_back(name);
  }
  return out;
}

void ExpectMatches(const Json& got, const Json& want) {
  ASSERT_TRUE(got.is_object()) << got;
  EXPECT_EQ(got.at("ts"), want.at("ts"));
  EXPECT_EQ(got.at("dp_rank"), want.at("dp_rank"));
  EXPECT_EQ(testutil::EventsAsListed(got.at("events"), want.at("events")), want.at("events"));
  EXPECT_EQ(got.at("skipped_events"), 0);
  EXPECT_EQ(got.at("skipped_fields"), 0);
}

TEST(DecodeCommandTest, BinaryExists) { ASSERT_TRUE(std::filesystem::exists(kBinary)) << kBinary; }

TEST(DecodeCommandTest, OneFilePrintsItsObjectAsExpected) {
  const Json expected = Expected();
  for (const std::string& name : VectorNames()) {
    SCOPED_TRACE(name);
    const Result r = RunKvindex({"decode", Vector(name)});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_THAT(r.err, IsEmpty());
    ExpectMatches(Json::parse(r.out), expected.at(name));
  }
}

TEST(DecodeCommandTest, SeveralFilesPrintAnArrayInArgumentOrder) {
  const Json expected = Expected();
  const std::vector<std::string> names = VectorNames();
  std::vector<std::string> args = {"decode"};
  for (const std::string& name : names) args.push_back(Vector(name));
  const Result r = RunKvindex(args);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.err, IsEmpty());
  const Json got = Json::parse(r.out);
  ASSERT_TRUE(got.is_array());
  ASSERT_EQ(got.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    ExpectMatches(got[i], expected.at(names[i]));
  }
}

TEST(DecodeCommandTest, DashReadsStdin) {
  const Result r = RunKvindex({"decode", "-"}, Vector("multi_array"));
  EXPECT_EQ(r.exit_code, 0);
  ExpectMatches(Json::parse(r.out), Expected().at("multi_array"));
}

TEST(DecodeCommandTest, BadFileExitsOneAndKeepsItsPlaceAsAnError) {
  const std::filesystem::path bad = std::filesystem::path(testing::TempDir()) / "cut.msgpack";
  const std::string whole = ReadFile(Vector("stored_map_current"));
  WriteFile(bad, whole.substr(0, whole.size() / 2));
  const Result r =
      RunKvindex({"decode", Vector("cleared_map"), bad, "/nonexistent/x.msgpack", Vector("removed_array")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(bad.string() + ": truncated: "));
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/x.msgpack: cannot open file"));
  const Json got = Json::parse(r.out);
  ASSERT_TRUE(got.is_array());
  ASSERT_EQ(got.size(), 4u);  // one entry per file, in order
  ExpectMatches(got[0], Expected().at("cleared_map"));
  EXPECT_EQ(got[1].at("file"), bad.string());
  EXPECT_THAT(got[1].at("error").get<std::string>(), StartsWith("truncated: "));
  EXPECT_EQ(got[2], Json::parse(R"({"file": "/nonexistent/x.msgpack", "error": "cannot open file"})"));
  ExpectMatches(got[3], Expected().at("removed_array"));
}

TEST(DecodeCommandTest, OneBadFileExitsOneWithNothingOnStdout) {
  const std::filesystem::path bad = std::filesystem::path(testing::TempDir()) / "trailing.msgpack";
  WriteFile(bad, ReadFile(Vector("cleared_array")) + "x");
  const Result r = RunKvindex({"decode", bad});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_THAT(r.err, HasSubstr(bad.string() + ": trailing_bytes: "));
}

TEST(DecodeCommandTest, UsageErrorsExitTwo) {
  Result r = RunKvindex({"decode"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("usage: kvindex decode FILE..."));
  r = RunKvindex({"decode", "--frobnicate", Vector("cleared_map")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown option --frobnicate"));
}

TEST(DecodeCommandTest, HelpPrintsUsageAndExitsZero) {
  Result r = RunKvindex({"decode", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("usage: kvindex decode FILE..."));
  r = RunKvindex({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("decode"));
}

TEST(KvindexMainTest, UnknownOrMissingSubcommandPrintsUsageAndExitsTwo) {
  Result r = RunKvindex({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown subcommand 'frobnicate'"));
  EXPECT_THAT(r.err, HasSubstr("usage: kvindex SUBCOMMAND"));
  r = RunKvindex({});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("usage: kvindex SUBCOMMAND"));
}

}  // namespace
}  // namespace kvindex
