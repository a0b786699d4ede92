#pragma once

// FakeEngine: a test stand-in for a vLLM engine's KV-event publisher that
// speaks exactly vLLM's ZeroMQ protocol (vllm/distributed/kv_events.py):
//  - a PUB socket (an XPUB, identical on the wire, so the test can see
//    subscriptions arrive) sending [topic, seq as 8 bytes big-endian, payload],
//    seq from 0, +1 per batch;
//  - a ROUTER replay socket answering ["", start_seq8] with one reply per
//    buffered batch with seq >= start ( ["", seq8, payload] or, newer vLLM,
//    ["", topic, seq8, payload] ) then the end marker (seq 0xff..ff, empty payload);
//  - Restart() starts counting from 0 again with an empty buffer.
// Payloads are built with msgpack::packer in vLLM's layouts (PayloadBuilder).
//
// Thread safety: every call may be made from any thread (the sockets live on
// the engine's own I/O thread; calls wait for it).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/ingest/internal/io_thread.h"
#include "tests/testing/wait.h"
#include "zmq.hpp"

namespace kvindex::testing {

enum class ReplayForm { kThreeFrames, kFourFrames };

struct FakeEngineOptions {
  std::string host = "127.0.0.1";
  uint32_t events_port = 0;   // 0: ephemeral
  bool replay = true;
  uint32_t replay_port = 0;   // 0: ephemeral
  std::string topic;          // topic frame of every message (vLLM default "")
  ReplayForm replay_form = ReplayForm::kThreeFrames;
  size_t buffer_steps = 10000;  // batches kept for replay (vLLM's buffer_steps)
  std::string connect_to;     // non-empty: the PUB connects here (bind mode) instead of binding
};

class FakeEngine {
 public:
  // Binds (or connects) the sockets. UNAVAILABLE when a port is taken.
  static absl::StatusOr<std::unique_ptr<FakeEngine>> Create(FakeEngineOptions options);
  ~FakeEngine();

  const std::string& host() const { return options_.host; }
  uint32_t events_port() const { return events_port_; }
  uint32_t replay_port() const { return replay_port_; }

  // Publishes a batch with the next seq; returns that seq.
  uint64_t Publish(const std::string& payload);
  // Buffers a batch for replay under the next seq but never sends it: a
  // message the PUB queue dropped.
  uint64_t PublishLost(const std::string& payload);
  // Sends arbitrary frames on the PUB socket (malformed messages).
  void SendRaw(const std::vector<std::string>& frames);
  // The engine process restarts: seq from 0, empty replay buffer.
  void Restart();
  // Replay requests are read but never answered (a hung engine).
  void SetReplayMuted(bool muted);
  void SetReplayForm(ReplayForm form);
  // Forgets buffered batches with seq < `seq` (they fell out of buffer_steps).
  void ForgetBefore(uint64_t seq);

  // Subscriptions currently registered on the PUB socket.
  int subscribers();
  // Waits until at least `n` subscriptions are registered.
  bool WaitForSubscribers(int n, absl::Duration timeout);
  uint64_t replay_requests();
  uint64_t next_seq();

 private:
  class Task;
  explicit FakeEngine(FakeEngineOptions options);
  // Runs `fn` on the engine thread and waits for it.
  void Run(absl::AnyInvocable<void(Task&)> fn);

  FakeEngineOptions options_;
  uint32_t events_port_ = 0;
  uint32_t replay_port_ = 0;
  zmq::context_t context_{1};
  std::unique_ptr<IoThread> thread_;
};

enum class EventForm { kArray, kMap };

// Builds one msgpack batch [ts, [events...], dp_rank] in vLLM's layouts.
class PayloadBuilder {
 public:
  explicit PayloadBuilder(EventForm form = EventForm::kArray) : form_(form) {}

  PayloadBuilder& Stored(std::vector<uint64_t> hashes, std::optional<uint64_t> parent,
                         std::vector<uint32_t> tokens, uint32_t block_size,
                         std::optional<std::string> medium = "GPU",
                         std::optional<std::string> lora_name = std::nullopt);
  PayloadBuilder& Removed(std::vector<uint64_t> hashes, std::optional<std::string> medium = "GPU");
  PayloadBuilder& Cleared();
  // An event with a tag no decoder knows.
  PayloadBuilder& Unknown();
  std::string Build(double ts = 1700000000.0, std::optional<int64_t> dp_rank = 0) const;

 private:
  struct Event {
    enum Kind { kStored, kRemoved, kCleared, kUnknown } kind;
    std::vector<uint64_t> hashes;
    std::optional<uint64_t> parent;
    std::vector<uint32_t> tokens;
    uint32_t block_size = 0;
    std::optional<std::string> medium;
    std::optional<std::string> lora_name;
  };
  EventForm form_;
  std::vector<Event> events_;
};

// Test prompts: block k of the canonical prompt holds tokens
// [k*block_size, (k+1)*block_size) and has engine hash kChainHashBase + k.
inline constexpr uint64_t kChainHashBase = 0xabc000;
std::vector<uint32_t> PromptTokens(uint32_t blocks, uint32_t block_size);
// A batch storing block k of the canonical prompt, chained to block k-1.
std::string ChainBlockPayload(uint32_t k, uint32_t block_size, double ts = 1700000000.0);

// The suite's one wait (tests/testing/wait.h), here for the tests that wait on a FakeEngine.
using ::kvindex::testutil::WaitFor;

}  // namespace kvindex::testing
