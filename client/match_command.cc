#include "client/match_command.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli_args.h"
#include "client/cli_output.h"

namespace kvindex {
namespace {

constexpr std::string_view kUsage =
    "usage: kvindex match --model M [--lora L] (--tokens 1,2,3 | --tokens-file F | --hashes H,...)\n"
    "                     [--pods NS/NAME,...] [--weight MEDIUM=W,...]\n"
    "                     [--cache-salt S] [--mm IDENTIFIER:OFFSET:LENGTH]... [connection flags]\n"
    "  Which pods hold the longest cached prefix of the prompt, best first.\n"
    "  --cache-salt: the request's cache salt; --mm (repeatable, in prompt order): a multimodal input\n"
    "  whose placeholder tokens start at OFFSET (identifier as sent to the engine, e.g. multi_modal_uuids).\n"
    "  --tokens-file reads ids separated by commas, spaces or newlines (a JSON array works; '-': stdin).\n"
    "  --hashes takes index block hashes (decimal or 0x-hex), as computed by README \"Index hash\".\n";

std::vector<absl::string_view> Words(std::string_view text) {
  return absl::StrSplit(absl::string_view(text.data(), text.size()), absl::ByAnyChar(", \t\r\n[]"),
                        absl::SkipEmpty());
}


std::string Media(const v1::PodMatch& match) {
  std::vector<std::pair<std::string, uint32_t>> media(match.blocks_by_medium().begin(),
                                                      match.blocks_by_medium().end());
  std::sort(media.begin(), media.end());
  return absl::StrJoin(media, " ", absl::PairFormatter(":"));
}

void PrintTable(const v1::MatchRequest& request, const v1::MatchResponse& response, std::ostream& out) {
  out << "model " << request.model();
  if (!request.lora_name().empty()) out << " (lora " << request.lora_name() << ")";
  out << ": block size " << response.block_size() << ", " << response.query_blocks() << " full blocks in the query, "
      << response.pods_size() << (response.pods_size() == 1 ? " pod matches\n" : " pods match\n");
  if (response.pods_size() == 0) return;
  cli::Table table({"POD", "RANK", "MATCHED_BLOCKS", "MATCHED_TOKENS", "MEDIA", "SCORE"});
  for (const v1::PodMatch& match : response.pods()) {
    table.AddRow({match.pod(), absl::StrCat(match.dp_rank()), absl::StrCat(match.matched_blocks()),
                  absl::StrCat(match.matched_tokens()), Media(match), absl::StrCat(match.score())});
  }
  table.Print(out);
}

}  // namespace

absl::StatusOr<std::vector<uint32_t>> ParseTokenList(std::string_view text) {
  std::vector<uint32_t> tokens;
  for (absl::string_view word : Words(text)) {
    uint32_t token = 0;
    if (!absl::SimpleAtoi(word, &token)) {
      return absl::InvalidArgumentError(absl::StrCat("not a token id: '", word, "'"));
    }
    tokens.push_back(token);
  }
  return tokens;
}

absl::StatusOr<std::vector<uint64_t>> ParseHashList(std::string_view text) {
  std::vector<uint64_t> hashes;
  for (absl::string_view word : Words(text)) {
    uint64_t hash = 0;
    const bool ok = absl::StartsWithIgnoreCase(word, "0x") ? absl::SimpleHexAtoi(word.substr(2), &hash)
                                                            : absl::SimpleAtoi(word, &hash);
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("not a block hash: '", word, "'"));
    hashes.push_back(hash);
  }
  return hashes;
}

int RunMatchCommand(std::span<const std::string_view> args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<cli::CliArgs> parsed = cli::ParseWithConnectionFlags(
      args, {"--model", "--lora", "--tokens", "--tokens-file", "--hashes", "--pods", "--weight", "--cache-salt", "--mm"},
      {});
  if (!parsed.ok()) {
    err << "kvindex match: " << parsed.status().message() << "\n" << kUsage << cli::kConnectionUsage;
    return 2;
  }
  if (parsed->Has("--help") || parsed->Has("-h")) {
    out << kUsage << cli::kConnectionUsage;
    return 0;
  }
  auto usage_error = [&err](absl::string_view message) {
    err << "kvindex match: " << message << "\n" << kUsage;
    return 2;
  };
  if (!parsed->positional().empty()) return usage_error(absl::StrCat("unexpected '", parsed->positional()[0], "'"));
  const std::optional<std::string> model = parsed->Get("--model");
  if (!model.has_value() || model->empty()) return usage_error("--model is required");
  const int inputs = parsed->Has("--tokens") + parsed->Has("--tokens-file") + parsed->Has("--hashes");
  if (inputs != 1) return usage_error("give exactly one of --tokens, --tokens-file, --hashes");

  v1::MatchRequest request;
  request.set_model(*model);
  request.set_lora_name(parsed->Get("--lora").value_or(""));
  if (const int code = ReadPrompt(*parsed, "match", request, usage_error, err); code != 0) return code;
  if (auto pods = parsed->Get("--pods")) {
    for (absl::string_view pod : absl::StrSplit(*pods, ',', absl::SkipEmpty())) request.add_pods(std::string(pod));
  }
  if (auto weights = parsed->Get("--weight")) {
    for (absl::string_view item : absl::StrSplit(*weights, ',', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
      double weight = 0;
      if (kv.first.empty() || !absl::SimpleAtod(kv.second, &weight)) {
        return usage_error(absl::StrCat("--weight wants MEDIUM=NUMBER, got '", item, "'"));
      }
      (*request.mutable_medium_weights())[kv.first] = weight;
    }
  }

  request.set_cache_salt(parsed->Get("--cache-salt").value_or(""));
  for (const std::string& mm : parsed->GetAll("--mm")) {
    // The identifier may hold ':' itself: offset and length are the last two fields.
    const size_t length_at = mm.rfind(':');
    const size_t offset_at = length_at == std::string::npos || length_at == 0 ? std::string::npos
                                                                               : mm.rfind(':', length_at - 1);
    uint32_t offset = 0, length = 0;
    if (offset_at == std::string::npos || offset_at == 0 ||
        !absl::SimpleAtoi(absl::string_view(mm).substr(offset_at + 1, length_at - offset_at - 1), &offset) ||
        !absl::SimpleAtoi(absl::string_view(mm).substr(length_at + 1), &length) || length == 0) {
      return usage_error(absl::StrCat("--mm wants IDENTIFIER:OFFSET:LENGTH (length >= 1), got '", mm, "'"));
    }
    v1::MultimodalInput* input = request.add_mm_inputs();
    input->set_identifier(mm.substr(0, offset_at));
    input->set_offset(offset);
    input->set_length(length);
  }

  absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client = cli::ConnectFromArgs(*parsed);
  if (!client.ok()) return cli::ReportUsageError("match", client.status(), err);
  absl::StatusOr<v1::MatchResponse> response = (*client)->Match(request);
  if (!response.ok()) return cli::ReportError("match", response.status(), err);
  if (parsed->Has("--json")) {
    cli::PrintJson(*response, out);
  } else {
    PrintTable(request, *response, out);
  }
  return 0;
}

}  // namespace kvindex
