#include "tools/bench/rpc_load.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/async_unary_call.h"
#include "tools/bench/child_process.h"

namespace kvindex::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Slot {
  size_t stub = 0;
  size_t next = 0;  // position in the schedule
  size_t request = 0;
  Clock::time_point start;
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientAsyncResponseReader<grpc::ByteBuffer>> reader;
  grpc::ByteBuffer response;
  grpc::Status status;
};

struct ThreadResult {
  uint64_t all_calls = 0;
  uint64_t ok = 0;
  uint64_t errors = 0;
  std::map<std::string, uint64_t> error_codes;
  std::vector<std::vector<int64_t>> latency_ns;
};

void RunThread(const LoadOptions& options, size_t thread, size_t first_slot, size_t slots,
               const std::vector<std::unique_ptr<grpc::GenericStub>>& stubs, Clock::time_point record_from,
               Clock::time_point end, ThreadResult* result) {
  grpc::CompletionQueue cq;
  const std::string auth = options.token.empty() ? "" : absl::StrCat("Bearer ", options.token);
  const size_t schedule_size = options.schedule.empty() ? options.requests.size() : options.schedule.size();
  std::vector<Slot> slot(slots);
  result->latency_ns.resize(options.classes);
  const auto issue = [&](Slot& s) {
    s.request = options.schedule.empty() ? s.next : options.schedule[s.next];
    s.next = (s.next + 1) % schedule_size;
    s.reader.reset();  // lives in the previous call's arena: release it before that call's context
    s.context = std::make_unique<grpc::ClientContext>();
    s.context->set_deadline(std::chrono::system_clock::now() +
                            std::chrono::nanoseconds(absl::ToInt64Nanoseconds(options.call_deadline)));
    if (!auth.empty()) s.context->AddMetadata("authorization", auth);
    s.start = Clock::now();
    s.reader = stubs[s.stub]->PrepareUnaryCall(s.context.get(), options.method, options.requests[s.request], &cq);
    s.reader->StartCall();
    s.reader->Finish(&s.response, &s.status, &s);
  };
  for (size_t i = 0; i < slots; ++i) {
    const size_t global = first_slot + i;
    slot[i].stub = global % stubs.size();
    // Spread the slots over the schedule so they do not send the same request in lockstep.
    slot[i].next = (global * 7919) % schedule_size;
    issue(slot[i]);
  }
  size_t in_flight = slots;
  void* tag = nullptr;
  bool ok = false;
  while (in_flight > 0 && cq.Next(&tag, &ok)) {
    Slot& s = *static_cast<Slot*>(tag);
    const Clock::time_point now = Clock::now();
    ++result->all_calls;
    if (s.start >= record_from && now <= end) {
      if (ok && s.status.ok()) {
        ++result->ok;
        result->latency_ns[options.request_class.empty() ? 0 : options.request_class[s.request]].push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - s.start).count());
        if (options.on_response) options.on_response(thread, s.request, s.response);
      } else {
        ++result->errors;
        const std::string key =
            absl::StrCat(static_cast<int>(s.status.error_code()), ": ", s.status.error_message());
        if (result->error_codes.size() < 16 || result->error_codes.contains(key)) ++result->error_codes[key];
      }
    }
    if (now < end) {
      issue(s);
    } else {
      --in_flight;
    }
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace

LoadResult RunClosedLoop(const LoadOptions& options) {
  LoadResult out;
  if (options.channels.empty() || options.requests.empty()) return out;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (const auto& channel : options.channels) stubs.push_back(std::make_unique<grpc::GenericStub>(channel));
  const size_t concurrency = std::max<size_t>(options.concurrency, 1);
  const size_t threads = std::clamp<size_t>(options.threads, 1, concurrency);
  const double cpu_start = SelfCpuSeconds();
  const Clock::time_point start = Clock::now();
  const Clock::time_point record_from = start + std::chrono::nanoseconds(absl::ToInt64Nanoseconds(options.warmup));
  const Clock::time_point end = record_from + std::chrono::nanoseconds(absl::ToInt64Nanoseconds(options.duration));
  std::vector<ThreadResult> results(threads);
  {
    std::vector<std::jthread> workers;
    size_t first = 0;
    for (size_t t = 0; t < threads; ++t) {
      const size_t slots = concurrency / threads + (t < concurrency % threads ? 1 : 0);
      workers.emplace_back(RunThread, std::cref(options), t, first, slots, std::cref(stubs), record_from, end,
                           &results[t]);
      first += slots;
    }
  }
  out.client_cpu_seconds = SelfCpuSeconds() - cpu_start;
  out.seconds = absl::ToDoubleSeconds(options.duration);
  out.latency_ns.resize(options.classes);
  for (ThreadResult& r : results) {
    out.all_calls += r.all_calls;
    out.ok += r.ok;
    out.errors += r.errors;
    for (const auto& [k, v] : r.error_codes) out.error_codes[k] += v;
    for (size_t c = 0; c < options.classes && c < r.latency_ns.size(); ++c) {
      out.latency_ns[c].insert(out.latency_ns[c].end(), r.latency_ns[c].begin(), r.latency_ns[c].end());
    }
  }
  return out;
}

}  // namespace kvindex::bench
