#include "server/pods_file.h"

#include "absl/strings/str_cat.h"
#include "core/util/read_file.h"
#include "kvindex/v1/kvindex.pb.h"
#include "proto/text_proto.h"
#include "server/proto_convert.h"

namespace kvindex::server {

absl::StatusOr<std::vector<Pod>> ParsePodSnapshotText(absl::string_view text) {
  v1::PodSnapshot snapshot;
  if (absl::Status status = ParseTextProto(std::string(text), &snapshot); !status.ok()) return status;
  std::vector<Pod> pods;
  pods.reserve(snapshot.pods_size());
  for (const v1::Pod& pod : snapshot.pods()) pods.push_back(PodFromProto(pod));
  return pods;
}

absl::StatusOr<std::vector<Pod>> LoadPodsFile(const std::string& path) {
  absl::StatusOr<std::string> text = kvindex::ReadFileToString(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<Pod>> pods = ParsePodSnapshotText(*text);
  if (!pods.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", pods.status().message()));
  return pods;
}

}  // namespace kvindex::server
