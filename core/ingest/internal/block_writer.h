#pragma once

// BlockWriter: where a WorkerFeed's decoded batches go, one worker's blocks;
// IndexWriter is the one that writes them to the PrefixIndex. The feed only
// ever calls downstream through it (events -> index); what the index could
// not apply comes back in the ApplyResult, for the worker's status and metrics.
//
// Thread safety: a writer is used by the one I/O thread that owns its feed;
// IndexWriter's PrefixIndex may be shared (its calls are thread-safe).

#include <utility>

#include "core/events/event_batch.h"
#include "core/index/prefix_index.h"
#include "core/index/worker_key.h"

namespace kvindex {

class BlockWriter {
 public:
  virtual ~BlockWriter() = default;
  // Applies a decoded batch to the worker; what could not be applied is counted in the result.
  [[nodiscard]] virtual ApplyResult Apply(const EventBatch& batch) = 0;
  // Apply, recording `cursor` (the batch's seq and digest) with the blocks it
  // leaves (PrefixIndex::Apply). Writers that keep no cursor just Apply.
  [[nodiscard]] virtual ApplyResult ApplyAt(const EventBatch& batch, const BatchCursor& cursor) {
    return Apply(batch);
  }
  // Drops every block the worker holds (it stays known).
  virtual void Clear() = 0;
};

// Writes one worker's batches to a PrefixIndex, which must outlive it.
class IndexWriter final : public BlockWriter {
 public:
  IndexWriter(PrefixIndex* index, WorkerKey worker, WorkerContext context)
      : index_(index), worker_(std::move(worker)), context_(std::move(context)) {}

  [[nodiscard]] ApplyResult Apply(const EventBatch& batch) override { return index_->Apply(worker_, context_, batch); }
  [[nodiscard]] ApplyResult ApplyAt(const EventBatch& batch, const BatchCursor& cursor) override {
    return index_->Apply(worker_, context_, batch, cursor);
  }
  void Clear() override { index_->ClearWorker(worker_); }

 private:
  PrefixIndex* const index_;
  const WorkerKey worker_;
  const WorkerContext context_;
};

}  // namespace kvindex
