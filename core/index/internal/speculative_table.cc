#include "core/index/internal/speculative_table.h"

#include <algorithm>

#include "core/index/internal/kv_cache_group.h"

namespace kvindex {

SpeculativeTable::SpeculativeTable(SpeculativeOptions options) : options_(std::move(options)) {}

uint32_t SpeculativeTable::Record(uint32_t holder, const ContextKey& context, absl::Span<const uint64_t> xs,
                                  absl::Time deadline, const WorkerLock&) {
  const uint32_t worker = WorkerOfHolder(holder);
  const absl::Time now = Now();
  absl::MutexLock lock(&lock_.mu);
  PurgeLocked(now);
  const uint32_t context_id = ContextIdLocked(context);
  WorkerState& state = workers_[worker];
  for (uint64_t x : xs) {
    auto [it, added] = entries_.try_emplace(Key{worker, x});
    Entry& e = it->second;
    if (added) {
      e = Entry{now, deadline, 0, holder, context_id};
      ++contexts_[context_id].second;
      state.xs.insert(x);
      auto& specs = by_x_[x];
      specs.insert(std::upper_bound(specs.begin(), specs.end(), holder,
                                    [](uint32_t h, const Spec& s) { return h < s.holder; }),
                   Spec{holder, deadline});
      if (deadline != absl::InfiniteFuture()) by_deadline_.insert({deadline, worker, x});
    } else {
      by_lru_.erase(e.lru);
      if (deadline > e.deadline) {
        if (e.deadline != absl::InfiniteFuture()) by_deadline_.erase({e.deadline, worker, x});
        if (deadline != absl::InfiniteFuture()) by_deadline_.insert({deadline, worker, x});
        e.deadline = deadline;
        for (Spec& s : by_x_[x]) {
          if (s.holder == e.holder) s.deadline = deadline;
        }
      }
    }
    e.lru = next_lru_++;
    by_lru_.emplace(e.lru, Key{worker, x});
  }
  while (options_.max_entries != 0 && entries_.size() > options_.max_entries) {
    EraseLocked(by_lru_.begin()->second, Outcome::kDropped);
  }
  PublishLocked();
  return static_cast<uint32_t>(xs.size());
}

void SpeculativeTable::Confirm(uint32_t worker, absl::Span<const uint64_t> xs, const WorkerLock&) {
  if (xs.empty()) return;
  const absl::Time now = Now();
  std::vector<absl::Duration> latencies;
  {
    absl::MutexLock lock(&lock_.mu);
    auto state = workers_.find(worker);
    if (state == workers_.end()) return;
    WorkerState& w = state->second;
    for (uint64_t x : xs) {
      auto it = entries_.find(Key{worker, x});
      if (it == entries_.end()) {
        // A late confirmation: a sample of the engine's latency, not an entry back.
        if (auto late = w.late.find(x); late != w.late.end()) {
          w.latencies.Add(now - late->second);
          w.late.erase(late);
          --late_total_;
        }
        continue;
      }
      const absl::Duration latency = now - it->second.recorded;
      w.latencies.Add(latency);
      if (it->second.deadline <= now) {  // too late: it had already expired
        EraseLocked(Key{worker, x}, Outcome::kExpired);
        continue;
      }
      latencies.push_back(latency);
      EraseLocked(Key{worker, x}, Outcome::kConfirmed);
    }
    PublishLocked();
  }
  if (options_.on_confirm) {
    for (absl::Duration latency : latencies) options_.on_confirm(latency);
  }
}

void SpeculativeTable::Drop(uint32_t worker, absl::Span<const uint64_t> xs, const WorkerLock&) {
  if (xs.empty()) return;
  absl::MutexLock lock(&lock_.mu);
  for (uint64_t x : xs) {
    if (entries_.contains(Key{worker, x})) EraseLocked(Key{worker, x}, Outcome::kDropped);
  }
  PublishLocked();
}

void SpeculativeTable::DropWorker(uint32_t worker, bool forget, const WorkerLock&) {
  absl::MutexLock lock(&lock_.mu);
  auto state = workers_.find(worker);
  if (state == workers_.end()) return;
  const std::vector<uint64_t> xs(state->second.xs.begin(), state->second.xs.end());
  const absl::Time now = Now();
  for (uint64_t x : xs) {
    const bool expired = entries_.at(Key{worker, x}).deadline <= now;
    EraseLocked(Key{worker, x}, expired ? Outcome::kExpired : Outcome::kDropped);
  }
  late_total_ -= state->second.late.size();
  state->second.late.clear();
  state->second.late_order.clear();
  if (forget) workers_.erase(worker);
  PublishLocked();
}

bool SpeculativeTable::Watches(uint32_t worker) const {
  if (watched_.load(std::memory_order_relaxed) == 0) return false;
  absl::ReaderMutexLock lock(&lock_.mu);
  auto it = workers_.find(worker);
  return it != workers_.end() && (!it->second.xs.empty() || !it->second.late.empty());
}

size_t SpeculativeTable::CountOf(uint32_t worker) const {
  if (empty()) return 0;
  absl::ReaderMutexLock lock(&lock_.mu);
  auto it = workers_.find(worker);
  return it == workers_.end() ? 0 : it->second.xs.size();
}

absl::Duration SpeculativeTable::TtlOf(uint32_t worker) const {
  absl::ReaderMutexLock lock(&lock_.mu);
  auto it = workers_.find(worker);
  if (it == workers_.end()) return options_.ttl;
  return it->second.latencies.Ttl(options_.ttl, options_.ttl_min, options_.ttl_max);
}

std::vector<uint32_t> SpeculativeTable::BlockSizes(std::string_view model, std::string_view lora) const {
  std::vector<uint32_t> sizes;
  absl::ReaderMutexLock lock(&lock_.mu);
  for (const auto& [context, count] : contexts_) {
    const auto& [m, l, bs] = context;
    if (count != 0 && m == model && l == lora) sizes.push_back(bs);
  }
  std::sort(sizes.begin(), sizes.end());
  return sizes;
}

void SpeculativeTable::HoldersOf(uint64_t x, absl::Time now, std::vector<Holder>& out) const {
  absl::ReaderMutexLock lock(&lock_.mu);
  auto it = by_x_.find(x);
  if (it == by_x_.end()) return;
  for (const Spec& s : it->second) {
    if (s.deadline > now) out.push_back(Holder{s.holder, 1, kSpeculativeMask});
  }
}

bool SpeculativeTable::Holds(uint64_t x, uint32_t worker, absl::Time now) const {
  absl::ReaderMutexLock lock(&lock_.mu);
  auto it = entries_.find(Key{worker, x});
  return it != entries_.end() && it->second.deadline > now;
}

void SpeculativeTable::PurgeExpired(absl::Time now) {
  if (empty()) return;
  absl::MutexLock lock(&lock_.mu);
  PurgeLocked(now);
  PublishLocked();
}

SpeculativeStats SpeculativeTable::Stats() const {
  absl::ReaderMutexLock lock(&lock_.mu);
  return SpeculativeStats{entries_.size(), confirmed_, expired_, dropped_};
}

void SpeculativeTable::PurgeLocked(absl::Time now) {
  while (!by_deadline_.empty() && std::get<0>(*by_deadline_.begin()) <= now) {
    const auto [deadline, worker, x] = *by_deadline_.begin();
    EraseLocked(Key{worker, x}, Outcome::kExpired);
  }
}

void SpeculativeTable::EraseLocked(const Key& key, Outcome outcome) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  const Entry e = it->second;
  entries_.erase(it);
  const auto& [worker, x] = key;
  if (auto specs = by_x_.find(x); specs != by_x_.end()) {
    auto& v = specs->second;
    v.erase(std::remove_if(v.begin(), v.end(), [&](const Spec& s) { return s.holder == e.holder; }), v.end());
    if (v.empty()) by_x_.erase(specs);
  }
  by_lru_.erase(e.lru);
  if (e.deadline != absl::InfiniteFuture()) by_deadline_.erase({e.deadline, worker, x});
  if (auto state = workers_.find(worker); state != workers_.end()) {
    WorkerState& w = state->second;
    w.xs.erase(x);
    if (outcome == Outcome::kExpired && w.late.try_emplace(x, e.recorded).second) {
      ++late_total_;
      w.late_order.push_back(x);
      // Bounded, oldest first (late_order may still name an X confirmed late since: popping it
      // then erases nothing, or a later copy: an approximation of FIFO, bounded either way).
      while (w.late_order.size() > kLateEntries) {
        late_total_ -= w.late.erase(w.late_order.front());
        w.late_order.pop_front();
      }
    }
  }
  --contexts_[e.context].second;
  switch (outcome) {
    case Outcome::kConfirmed: ++confirmed_; break;
    case Outcome::kExpired: ++expired_; break;
    case Outcome::kDropped: ++dropped_; break;
  }
}

void SpeculativeTable::PublishLocked() {
  size_.store(entries_.size(), std::memory_order_relaxed);
  watched_.store(entries_.size() + late_total_, std::memory_order_relaxed);
}

uint32_t SpeculativeTable::ContextIdLocked(const ContextKey& context) {
  auto [it, added] = context_ids_.try_emplace(context, static_cast<uint32_t>(contexts_.size()));
  if (added) contexts_.emplace_back(context, 0);
  return it->second;
}

}  // namespace kvindex
