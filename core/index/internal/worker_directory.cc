#include "core/index/internal/worker_directory.h"

#include <algorithm>
#include <utility>

namespace kvindex {

std::shared_ptr<WorkerBlocks> WorkerDirectory::Find(const WorkerKey& key) const {
  absl::ReaderMutexLock lock(&lock_.mu);
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

std::shared_ptr<WorkerBlocks> WorkerDirectory::FindOrCreate(
    const WorkerKey& key, absl::FunctionRef<std::shared_ptr<WorkerBlocks>(uint32_t id)> make) {
  if (auto w = Find(key)) return w;
  absl::MutexLock lock(&lock_.mu);
  auto& slot = by_key_[key];
  if (slot == nullptr) {
    slot = make(next_id_++);
    by_id_[slot->id()] = slot;
    by_pod_[key.pod].push_back(slot->id());
  }
  return slot;
}

std::shared_ptr<WorkerBlocks> WorkerDirectory::Remove(const WorkerKey& key) {
  absl::MutexLock lock(&lock_.mu);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return nullptr;
  std::shared_ptr<WorkerBlocks> w = std::move(it->second);
  by_key_.erase(it);
  by_id_.erase(w->id());
  auto pod = by_pod_.find(key.pod);
  if (pod != by_pod_.end()) {
    std::erase(pod->second, w->id());
    if (pod->second.empty()) by_pod_.erase(pod);
  }
  return w;
}

std::vector<WorkerKey> WorkerDirectory::KeysOfPod(std::string_view pod) const {
  std::vector<WorkerKey> keys;
  absl::ReaderMutexLock lock(&lock_.mu);
  auto it = by_pod_.find(absl::string_view(pod.data(), pod.size()));
  if (it == by_pod_.end()) return keys;
  for (uint32_t id : it->second) keys.push_back(by_id_.at(id)->key());
  return keys;
}

std::vector<uint32_t> WorkerDirectory::IdsOfPods(absl::Span<const std::string> pods) const {
  std::vector<uint32_t> ids;
  {
    absl::ReaderMutexLock lock(&lock_.mu);
    for (const std::string& pod : pods) {
      auto it = by_pod_.find(pod);
      if (it != by_pod_.end()) ids.insert(ids.end(), it->second.begin(), it->second.end());
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<std::shared_ptr<WorkerBlocks>> WorkerDirectory::All() const {
  std::vector<std::shared_ptr<WorkerBlocks>> workers;
  absl::ReaderMutexLock lock(&lock_.mu);
  workers.reserve(by_key_.size());
  for (const auto& [key, w] : by_key_) workers.push_back(w);
  return workers;
}

std::shared_ptr<WorkerBlocks> WorkerDirectory::Largest() const {
  std::shared_ptr<WorkerBlocks> largest;
  uint64_t most = 0;
  absl::ReaderMutexLock lock(&lock_.mu);
  for (const auto& [id, w] : by_id_) {
    const uint64_t live = w->live();
    if (live > most) {
      largest = w;
      most = live;
    }
  }
  return largest;
}

void WorkerDirectory::Resolve(absl::Span<const uint32_t> ids,
                              absl::FunctionRef<void(size_t i, const WorkerBlocks& worker)> fn) const {
  absl::ReaderMutexLock lock(&lock_.mu);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto it = by_id_.find(ids[i]);
    if (it != by_id_.end()) fn(i, *it->second);
  }
}

}  // namespace kvindex
