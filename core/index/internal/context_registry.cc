#include "core/index/internal/context_registry.h"

namespace kvindex {

void ContextRegistry::Use(const ContextKey& context, const WorkerLock& worker) {
  absl::MutexLock lock(&lock_.mu);
  ++contexts_[{std::get<0>(context), std::get<1>(context)}][std::get<2>(context)];
}

void ContextRegistry::Release(const ContextSet& contexts, const WorkerLock& worker) {
  absl::MutexLock lock(&lock_.mu);
  for (const ContextKey& c : contexts) {
    auto it = contexts_.find({std::get<0>(c), std::get<1>(c)});
    if (it == contexts_.end()) continue;
    auto bs = it->second.find(std::get<2>(c));
    if (bs != it->second.end() && --bs->second == 0) it->second.erase(bs);
    if (it->second.empty()) contexts_.erase(it);
  }
}

std::vector<uint32_t> ContextRegistry::BlockSizes(std::string_view model, std::string_view lora) const {
  std::vector<uint32_t> out;
  absl::ReaderMutexLock lock(&lock_.mu);
  auto it = contexts_.find(std::make_pair(std::string(model), std::string(lora)));
  if (it != contexts_.end()) {
    for (const auto& [bs, users] : it->second) out.push_back(bs);
  }
  return out;
}

}  // namespace kvindex
