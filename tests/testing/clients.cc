#include "tests/testing/clients.h"

#include <utility>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace kvindex::testutil {

std::unique_ptr<client::KvIndexClient> Connect(const std::string& address, client::ClientOptions options) {
  options.server = address;
  absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client = client::KvIndexClient::Create(options);
  EXPECT_TRUE(client.ok()) << "client of " << address << ": " << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

std::unique_ptr<client::KvIndexClient> Connect(const std::string& address, absl::Duration timeout) {
  client::ClientOptions options;
  options.timeout = timeout;
  return Connect(address, std::move(options));
}

}  // namespace kvindex::testutil
