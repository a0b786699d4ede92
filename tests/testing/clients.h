#pragma once

// Clients of a kvindex-server under test (in-process or a real process).

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "client/kvindex_client.h"

namespace kvindex::testutil {

// A client of the server at `address` ("host:port") with `options` (whose
// server field `address` replaces). A non-fatal test failure and nullptr when
// it cannot be made (a TLS file missing, half a client certificate).
std::unique_ptr<client::KvIndexClient> Connect(const std::string& address, client::ClientOptions options = {});

// The same, plaintext and without a token, every call's deadline `timeout`.
std::unique_ptr<client::KvIndexClient> Connect(const std::string& address, absl::Duration timeout);

}  // namespace kvindex::testutil
