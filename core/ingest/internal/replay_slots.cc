#include "core/ingest/internal/replay_slots.h"

#include <algorithm>

namespace kvindex {

ReplaySlots::ReplaySlots(size_t slots) : slots_(std::max<size_t>(slots, 1)) {}

bool ReplaySlots::Acquire(Holder holder, bool urgent, absl::AnyInvocable<void()> granted) {
  if (held_.contains(holder)) return true;
  if (auto it = waiting_.find(holder); it != waiting_.end()) {
    if (urgent && !it->second.urgent) {
      it->second.urgent = true;
      it->second.ticket = next_ticket_++;  // its entry in the normal line goes stale
      urgent_.emplace_back(holder, it->second.ticket);
    }
    return false;
  }
  if (held_.size() < slots_) {
    held_.insert(holder);
    return true;
  }
  const uint64_t ticket = next_ticket_++;
  waiting_.emplace(holder, Waiter{ticket, urgent, std::move(granted)});
  (urgent ? urgent_ : normal_).emplace_back(holder, ticket);
  return false;
}

void ReplaySlots::Release(Holder holder) {
  if (waiting_.erase(holder) > 0) {  // its entry in a line goes stale
    if (urgent_.size() + normal_.size() > 2 * waiting_.size() + 64) DropStale();
    return;
  }
  if (held_.erase(holder) == 0) return;
  Holder next = FirstLive(urgent_);
  if (next == nullptr) next = FirstLive(normal_);
  if (next == nullptr) return;
  auto it = waiting_.find(next);
  absl::AnyInvocable<void()> granted = std::move(it->second.granted);
  waiting_.erase(it);
  held_.insert(next);
  if (granted) granted();
}

ReplaySlots::Holder ReplaySlots::FirstLive(Line& line) {
  while (!line.empty()) {
    const auto [holder, ticket] = line.front();
    line.pop_front();
    auto it = waiting_.find(holder);
    if (it != waiting_.end() && it->second.ticket == ticket) return holder;
  }
  return nullptr;
}

void ReplaySlots::DropStale() {
  for (Line* line : {&urgent_, &normal_}) {
    std::erase_if(*line, [this](const std::pair<Holder, uint64_t>& entry) {
      auto it = waiting_.find(entry.first);
      return it == waiting_.end() || it->second.ticket != entry.second;
    });
  }
}

}  // namespace kvindex
