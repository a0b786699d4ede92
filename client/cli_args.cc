#include "client/cli_args.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/util/read_file.h"

namespace kvindex::cli {
namespace {

bool Contains(std::span<const std::string_view> list, std::string_view word) {
  return std::find(list.begin(), list.end(), word) != list.end();
}

}  // namespace

absl::StatusOr<CliArgs> CliArgs::Parse(std::span<const std::string_view> args,
                                       std::span<const std::string_view> value_flags,
                                       std::span<const std::string_view> switches) {
  CliArgs parsed;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view word = args[i];
    if (word.size() < 2 || word[0] != '-') {
      parsed.positional_.emplace_back(word);
      continue;
    }
    const size_t eq = word.find('=');
    const std::string_view name = word.substr(0, eq);
    if (Contains(value_flags, name)) {
      if (eq == std::string_view::npos && i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat(std::string(name), " needs a value"));
      }
      const std::string value(eq != std::string_view::npos ? word.substr(eq + 1) : args[++i]);
      parsed.values_[std::string(name)] = value;
      parsed.all_values_.emplace_back(name, value);
    } else if (Contains(switches, name) && eq == std::string_view::npos) {
      parsed.values_[std::string(name)] = "";
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option ", std::string(word)));
    }
  }
  return parsed;
}

std::optional<std::string> CliArgs::Get(std::string_view flag) const {
  auto it = values_.find(std::string(flag));
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> CliArgs::GetAll(std::string_view flag) const {
  std::vector<std::string> out;
  for (const auto& [name, value] : all_values_) {
    if (name == flag) out.push_back(value);
  }
  return out;
}

bool CliArgs::Has(std::string_view flag) const { return values_.contains(std::string(flag)); }

absl::StatusOr<CliArgs> ParseWithConnectionFlags(std::span<const std::string_view> args,
                                                 std::initializer_list<std::string_view> value_flags,
                                                 std::initializer_list<std::string_view> switches) {
  std::vector<std::string_view> values(std::begin(kConnectionValueFlags), std::end(kConnectionValueFlags));
  values.insert(values.end(), value_flags.begin(), value_flags.end());
  std::vector<std::string_view> all_switches(std::begin(kConnectionSwitches), std::end(kConnectionSwitches));
  all_switches.insert(all_switches.end(), switches.begin(), switches.end());
  return CliArgs::Parse(args, values, all_switches);
}

absl::StatusOr<client::ClientOptions> ClientOptionsFromArgs(const CliArgs& args) {
  client::ClientOptions options;
  if (const char* env = std::getenv("KVINDEX_SERVER"); env != nullptr && *env != '\0') options.server = env;
  if (const char* env = std::getenv("KVINDEX_TOKEN"); env != nullptr) options.token = env;
  if (auto server = args.Get("--server")) options.server = *server;
  if (auto token = args.Get("--token")) options.token = *token;
  if (auto token_file = args.Get("--token-file")) {
    absl::StatusOr<std::string> token = ReadFileToString(*token_file);
    if (!token.ok()) return token.status();
    options.token = std::string(absl::StripAsciiWhitespace(*token));
  }
  options.tls = args.Has("--tls");
  options.tls_ca_file = args.Get("--tls-ca-file").value_or("");
  options.tls_cert_file = args.Get("--tls-cert-file").value_or("");
  options.tls_key_file = args.Get("--tls-key-file").value_or("");
  options.tls_server_name = args.Get("--tls-server-name").value_or("");
  if (auto timeout = args.Get("--timeout")) {
    double seconds = 0;
    if (!absl::SimpleAtod(*timeout, &seconds) || !(seconds > 0) || seconds > 86400) {
      return absl::InvalidArgumentError(absl::StrCat("--timeout=", *timeout, ": want seconds in (0, 86400]"));
    }
    options.timeout = absl::Seconds(seconds);
  }
  return options;
}

absl::StatusOr<std::string> ReadInputFile(const std::string& path) {
  if (path != "-") return ReadFileToString(path);
  std::ostringstream data;
  data << std::cin.rdbuf();
  if (std::cin.bad()) return absl::DataLossError("error reading stdin");
  return data.str();
}

absl::StatusOr<std::unique_ptr<client::KvIndexClient>> ConnectFromArgs(const CliArgs& args) {
  absl::StatusOr<client::ClientOptions> options = ClientOptionsFromArgs(args);
  if (!options.ok()) return options.status();
  return client::KvIndexClient::Create(*options);
}

}  // namespace kvindex::cli
