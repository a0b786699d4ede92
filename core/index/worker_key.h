#pragma once

// Identity of an indexed worker: one engine process, i.e. a pod and its data-parallel rank.

#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kvindex {

struct WorkerKey {
  std::string pod;       // "namespace/name"
  uint32_t dp_rank = 0;  // data-parallel rank within the pod

  bool operator==(const WorkerKey&) const = default;
  auto operator<=>(const WorkerKey&) const = default;

  template <typename H>
  friend H AbslHashValue(H h, const WorkerKey& k) {
    return H::combine(std::move(h), k.pod, k.dp_rank);
  }
};

// "namespace/name#rank", for logs and messages.
inline std::string WorkerKeyString(const WorkerKey& k) { return absl::StrCat(k.pod, "#", k.dp_rank); }

}  // namespace kvindex
