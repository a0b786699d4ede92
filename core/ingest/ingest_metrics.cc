#include "core/ingest/ingest_metrics.h"

namespace kvindex {

IngestMetrics& NoIngestMetrics() {
  class Ignore final : public IngestMetrics {
   public:
    void OnBatchApplied(const EventBatch&, const ApplyResult&, std::optional<absl::Duration>) override {}
    void OnDecodeError(DecodeErrorReason) override {}
    void OnFeedEvent(FeedEvent) override {}
  };
  static Ignore* const ignore = new Ignore();
  return *ignore;
}

}  // namespace kvindex
