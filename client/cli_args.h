#pragma once

// Argument parsing shared by the `kvindex` subcommands that call the server:
// "--name=value", "--name value", bare switches, positional words, and the
// connection flags (--server, --token, TLS) that turn into ClientOptions.

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "client/kvindex_client.h"

namespace kvindex::cli {

// Connection flags every server subcommand takes (see kConnectionUsage).
inline constexpr std::string_view kConnectionValueFlags[] = {
    "--server", "--token", "--token-file", "--tls-ca-file", "--tls-cert-file",
    "--tls-key-file", "--tls-server-name", "--timeout"};
inline constexpr std::string_view kConnectionSwitches[] = {"--tls", "--json", "--help", "-h"};

inline constexpr std::string_view kConnectionUsage =
    "connection flags:\n"
    "  --server HOST:PORT      kvindex-server address (env KVINDEX_SERVER; default localhost:50051)\n"
    "  --token TOKEN           sent as 'authorization: Bearer TOKEN' (env KVINDEX_TOKEN)\n"
    "  --token-file FILE       read the token from FILE\n"
    "  --tls                   use TLS with the system roots\n"
    "  --tls-ca-file FILE      use TLS, verifying the server with these PEM roots\n"
    "  --tls-cert-file FILE    client certificate for mutual TLS (with --tls-key-file)\n"
    "  --tls-key-file FILE     its private key\n"
    "  --tls-server-name NAME  name expected in the server certificate\n"
    "  --timeout SECONDS       deadline of the call (default 30)\n"
    "  --json                  print the response as JSON instead of a table\n";

class CliArgs {
 public:
  // Parses `args`. Words starting with "-" must be one of `value_flags` (which
  // take the next word or "=value") or `switches`; anything else is
  // INVALID_ARGUMENT. Other words are positional, in order. A flag given
  // twice keeps its last value.
  [[nodiscard]] static absl::StatusOr<CliArgs> Parse(std::span<const std::string_view> args,
                                       std::span<const std::string_view> value_flags,
                                       std::span<const std::string_view> switches);

  // The value of a value flag; nullopt when absent.
  std::optional<std::string> Get(std::string_view flag) const;
  // Every value a repeatable value flag was given, in order.
  std::vector<std::string> GetAll(std::string_view flag) const;
  // Whether a switch (or value flag) was given.
  bool Has(std::string_view flag) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  absl::flat_hash_map<std::string, std::string> values_;
  std::vector<std::pair<std::string, std::string>> all_values_;  // (flag, value), in order
  std::vector<std::string> positional_;
};

// Parses `args` accepting the connection flags plus `value_flags` / `switches`.
[[nodiscard]] absl::StatusOr<CliArgs> ParseWithConnectionFlags(std::span<const std::string_view> args,
                                                 std::initializer_list<std::string_view> value_flags,
                                                 std::initializer_list<std::string_view> switches);

// ClientOptions from the connection flags, with KVINDEX_SERVER / KVINDEX_TOKEN
// as fallbacks. INVALID_ARGUMENT for a bad --timeout; NOT_FOUND for an
// unreadable --token-file.
[[nodiscard]] absl::StatusOr<client::ClientOptions> ClientOptionsFromArgs(const CliArgs& args);

// The contents of a file named on the command line; "-" reads stdin.
[[nodiscard]] absl::StatusOr<std::string> ReadInputFile(const std::string& path);

// Creates the client from the connection flags. An error means the flags (or
// a file they name) are wrong, found before any call: a usage error (exit 2).
[[nodiscard]] absl::StatusOr<std::unique_ptr<client::KvIndexClient>> ConnectFromArgs(const CliArgs& args);

}  // namespace kvindex::cli
