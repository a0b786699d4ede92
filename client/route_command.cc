#include "client/route_command.h"

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/cli_args.h"
#include "client/cli_output.h"
#include "client/match_command.h"

namespace kvindex {
namespace {

constexpr std::string_view kUsage =
    "usage: kvindex route --model M [--lora L] (--tokens 1,2,3 | --tokens-file F | --hashes H,...)\n"
    "                     --pod NS/NAME [--rank R] [--ttl-ms N] [--cache-salt S] [connection flags]\n"
    "  Records that the prompt was routed to the pod's dp rank R (default 0): its blocks match as the\n"
    "  tier SPECULATIVE until the engine stores them or the TTL passes (--ttl-ms 0 or unset: the\n"
    "  server's adaptive TTL; none for a pod without KV events).\n";

}  // namespace

int RunRouteCommand(std::span<const std::string_view> args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<cli::CliArgs> parsed = cli::ParseWithConnectionFlags(
      args, {"--model", "--lora", "--tokens", "--tokens-file", "--hashes", "--pod", "--rank", "--ttl-ms", "--cache-salt"},
      {});
  if (!parsed.ok()) {
    err << "kvindex route: " << parsed.status().message() << "\n" << kUsage << cli::kConnectionUsage;
    return 2;
  }
  if (parsed->Has("--help") || parsed->Has("-h")) {
    out << kUsage << cli::kConnectionUsage;
    return 0;
  }
  auto usage_error = [&err](absl::string_view message) {
    err << "kvindex route: " << message << "\n" << kUsage;
    return 2;
  };
  if (!parsed->positional().empty()) return usage_error(absl::StrCat("unexpected '", parsed->positional()[0], "'"));
  const std::optional<std::string> model = parsed->Get("--model");
  if (!model.has_value() || model->empty()) return usage_error("--model is required");
  const std::optional<std::string> pod = parsed->Get("--pod");
  if (!pod.has_value() || pod->empty()) return usage_error("--pod NS/NAME is required");
  const int inputs = parsed->Has("--tokens") + parsed->Has("--tokens-file") + parsed->Has("--hashes");
  if (inputs != 1) return usage_error("give exactly one of --tokens, --tokens-file, --hashes");

  v1::RecordRoutingRequest request;
  request.set_model(*model);
  request.set_lora_name(parsed->Get("--lora").value_or(""));
  request.set_pod(*pod);
  for (const char* flag : {"--rank", "--ttl-ms"}) {
    if (auto text = parsed->Get(flag)) {
      uint32_t value = 0;
      if (!absl::SimpleAtoi(*text, &value)) {
        return usage_error(absl::StrCat(flag, " wants a non-negative integer, got '", *text, "'"));
      }
      std::string_view(flag) == "--rank" ? request.set_dp_rank(value) : request.set_ttl_ms(value);
    }
  }
  if (const int code = ReadPrompt(*parsed, "route", request, usage_error, err); code != 0) return code;
  request.set_cache_salt(parsed->Get("--cache-salt").value_or(""));

  absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client = cli::ConnectFromArgs(*parsed);
  if (!client.ok()) return cli::ReportUsageError("route", client.status(), err);
  absl::StatusOr<v1::RecordRoutingResponse> response = (*client)->RecordRouting(request);
  if (!response.ok()) return cli::ReportError("route", response.status(), err);
  if (parsed->Has("--json")) {
    cli::PrintJson(*response, out);
  } else {
    out << request.pod() << " rank " << request.dp_rank() << ": " << response->blocks() << " speculative "
        << (response->blocks() == 1 ? "entry" : "entries") << ", "
        << (response->ttl_ms() == 0 ? std::string("no TTL (kept until evicted)")
                                    : absl::StrCat("TTL ", response->ttl_ms(), " ms"))
        << "\n";
  }
  return 0;
}

}  // namespace kvindex
