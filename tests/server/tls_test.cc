// TLS and mutual TLS: certificates made at test time with openssl; the server
// in-process, called by the client library and by the kvindex CLI.

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/kvindex_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/kvindex_server.h"
#include "server/peer_bootstrap.h"
#include "server/server_credentials.h"
#include "tests/server/server_process.h"
#include "tests/server/subprocess.h"

namespace kvindex::server {
namespace {

using ::kvindex::testing::BinPath;
using ::kvindex::testing::CommandResult;
using ::kvindex::testing::RunCommand;
using ::testing::HasSubstr;

// A CA, a server certificate for localhost/127.0.0.1 and a client
// certificate, all signed by the CA; plus a second, unrelated CA.
class Certificates {
 public:
  static std::unique_ptr<Certificates> Make() {
    auto certs = std::unique_ptr<Certificates>(new Certificates());
    char dir_template[] = "/tmp/kvindex-tls-XXXXXX";
    if (mkdtemp(dir_template) == nullptr) return nullptr;
    certs->dir_ = dir_template;
    const std::string script = absl::StrCat(R"(set -e
cd ')", certs->dir_, R"('
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -out ca.crt -days 2 -subj /CN=kvindex-test-ca
key other-ca.key
openssl req -x509 -new -key other-ca.key -out other-ca.crt -days 2 -subj /CN=other-ca
key server.key
openssl req -new -key server.key -out server.csr -subj /CN=localhost
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext 2>/dev/null
key replica.key
openssl req -new -key replica.key -out replica.csr -subj /CN=localhost
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > replica.ext
openssl x509 -req -in replica.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out replica.crt -days 2 -extfile replica.ext 2>/dev/null
key client.key
openssl req -new -key client.key -out client.csr -subj /CN=kvindex-test-client
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 -extfile client.ext 2>/dev/null
key stranger.key
openssl req -new -key stranger.key -out stranger.csr -subj /CN=stranger
openssl x509 -req -in stranger.csr -CA other-ca.crt -CAkey other-ca.key -CAcreateserial -out stranger.crt -days 2 -extfile client.ext 2>/dev/null
)");
    const CommandResult result = RunCommand({"/bin/bash", "-c", script});
    if (result.exit_code != 0) {
      ADD_FAILURE() << "openssl failed: " << result.err;
      return nullptr;
    }
    return certs;
  }

  ~Certificates() {
    if (!dir_.empty()) RunCommand({"/bin/rm", "-rf", dir_});
  }

  std::string Path(const std::string& name) const { return absl::StrCat(dir_, "/", name); }

 private:
  Certificates() = default;
  std::string dir_;
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    certs_ = Certificates::Make();
    ASSERT_NE(certs_, nullptr);
  }

  // `cert`: server.crt (serverAuth) or replica.crt (serverAuth and clientAuth, as replicas
  // that bootstrap from each other under mutual TLS share one).
  void StartServer(bool mutual, const std::string& cert = "server") {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.tls = {.cert_file = certs_->Path(cert + ".crt"),
                   .key_file = certs_->Path(cert + ".key"),
                   .client_ca_file = mutual ? certs_->Path("ca.crt") : ""};
    absl::StatusOr<std::unique_ptr<KvIndexServer>> server = KvIndexServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
  }

  // GetStats through the client library with these TLS settings.
  absl::Status Call(client::ClientOptions options) {
    options.server = address_;
    options.timeout = absl::Seconds(5);
    absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client = client::KvIndexClient::Create(options);
    if (!client.ok()) return client.status();
    return (*client)->GetStats().status();
  }

  client::ClientOptions Tls(const std::string& ca, const std::string& cert = "", const std::string& key = "") {
    client::ClientOptions options;
    options.tls_ca_file = certs_->Path(ca);
    if (!cert.empty()) options.tls_cert_file = certs_->Path(cert);
    if (!key.empty()) options.tls_key_file = certs_->Path(key);
    return options;
  }

  // A bootstrap from the server, by a replica configured with `own` (its own
  // --tls_* files) and --bootstrap_ca_file `peer_ca` (file names; empty: none).
  BootstrapOutcome BootstrapFromServer(const std::string& cert, bool mutual, const std::string& peer_ca) {
    TlsFiles own;
    if (!cert.empty()) {
      own = {.cert_file = certs_->Path(cert + ".crt"), .key_file = certs_->Path(cert + ".key"),
             .client_ca_file = mutual ? certs_->Path("ca.crt") : ""};
    }
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        MakePeerCredentials(own, peer_ca.empty() ? "" : certs_->Path(peer_ca));
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    if (!credentials.ok()) return BootstrapOutcome::kFailed;
    PrefixIndex index;
    KvIndexMetrics metrics;
    return BootstrapFromPeer({.peer = address_, .timeout = absl::Seconds(10), .credentials = *credentials}, &index,
                             &metrics)
        .outcome;
  }

  std::unique_ptr<Certificates> certs_;
  std::unique_ptr<KvIndexServer> server_;
  std::string address_;
};

TEST_F(TlsTest, TlsServesClientsThatTrustItsCa) {
  StartServer(/*mutual=*/false);
  EXPECT_TRUE(Call(Tls("ca.crt")).ok());
  // A client certificate is not needed, and not refused.
  EXPECT_TRUE(Call(Tls("ca.crt", "client.crt", "client.key")).ok());
  // Plaintext clients and clients trusting another CA do not get through.
  EXPECT_EQ(Call({}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Call(Tls("other-ca.crt")).code(), absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, MutualTlsNeedsAClientCertificateFromTheClientCa) {
  StartServer(/*mutual=*/true);
  EXPECT_TRUE(Call(Tls("ca.crt", "client.crt", "client.key")).ok());
  EXPECT_EQ(Call(Tls("ca.crt")).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Call(Tls("ca.crt", "stranger.crt", "stranger.key")).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Call({}).code(), absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, BootstrapReachesATlsPeerTrustingTheCaItIsGiven) {
  StartServer(/*mutual=*/false);
  EXPECT_EQ(BootstrapFromServer("server", /*mutual=*/false, "ca.crt"), BootstrapOutcome::kLoaded);
  EXPECT_NE(BootstrapFromServer("server", /*mutual=*/false, "other-ca.crt"), BootstrapOutcome::kLoaded);
  EXPECT_NE(BootstrapFromServer("", /*mutual=*/false, ""), BootstrapOutcome::kLoaded);  // plaintext
}

TEST_F(TlsTest, BootstrapUnderMutualTlsPresentsTheReplicasOwnCertificate) {
  StartServer(/*mutual=*/true, "replica");
  EXPECT_EQ(BootstrapFromServer("replica", /*mutual=*/true, "ca.crt"), BootstrapOutcome::kLoaded);
  // A server-only certificate (no clientAuth) is refused as a client's.
  EXPECT_NE(BootstrapFromServer("server", /*mutual=*/true, "ca.crt"), BootstrapOutcome::kLoaded);
}

TEST_F(TlsTest, CliSpeaksTlsAndMutualTls) {
  StartServer(/*mutual=*/true);
  const CommandResult ok = RunCommand({BinPath("kvindex"), "stats", "--server", address_, "--tls-ca-file",
                                       certs_->Path("ca.crt"), "--tls-cert-file", certs_->Path("client.crt"),
                                       "--tls-key-file", certs_->Path("client.key")});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("matches"));
  const CommandResult no_cert =
      RunCommand({BinPath("kvindex"), "stats", "--server", address_, "--timeout", "5", "--tls-ca-file",
                  certs_->Path("ca.crt")});
  EXPECT_EQ(no_cert.exit_code, 1);
  EXPECT_THAT(no_cert.err, HasSubstr("UNAVAILABLE"));
}

TEST(TlsConfigTest, HalfConfiguredTlsIsRefused) {
  for (const TlsFiles& files : {TlsFiles{.cert_file = "a.crt"}, TlsFiles{.key_file = "a.key"},
                                TlsFiles{.client_ca_file = "ca.crt"}}) {
    EXPECT_EQ(MakeServerCredentials(files).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(MakeServerCredentials({.cert_file = "/nonexistent.crt", .key_file = "/nonexistent.key"}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(MakeServerCredentials({}).ok());
}

TEST(TlsConfigTest, ServerWithGarbageCertificateFailsToStartCleanly) {
  const std::string junk = kvindex::testing::WriteTempFile("junk.pem", "not a certificate");
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.tls = {.cert_file = junk, .key_file = junk};
  EXPECT_EQ(KvIndexServer::Start(std::move(options)).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kvindex::server
