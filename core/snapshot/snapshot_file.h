#pragma once

// The snapshot file on disk (layout: snapshot_format.h). SnapshotFileWriter
// streams a body into DIR/kvindex.snapshot.tmp, checksumming it as it goes,
// and Commit() makes it DIR/kvindex.snapshot atomically: header written,
// fsync, rename over the old file, fsync of the directory — a crash at any
// point leaves the previous snapshot or the new one, never a mix.
// ReadSnapshotFile reads one back and checks everything but its meaning.
//
// Thread safety: a writer is used by one thread at a time; ReadSnapshotFile
// may be called from any thread. Two writers must not share a directory.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvindex {

class SnapshotFileWriter {
 public:
  // Creates (or truncates) DIR/kvindex.snapshot.tmp; DIR must exist. The
  // error of open() (e.g. PERMISSION_DENIED, NOT_FOUND) otherwise.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SnapshotFileWriter>> Create(const std::string& dir);
  // Removes the temporary file unless Commit() succeeded.
  ~SnapshotFileWriter();
  SnapshotFileWriter(const SnapshotFileWriter&) = delete;
  SnapshotFileWriter& operator=(const SnapshotFileWriter&) = delete;

  // Appends body bytes. Buffered: an error of a write may show only here,
  // later, or in Commit().
  [[nodiscard]] absl::Status Append(std::string_view bytes);

  // Finishes the file (see above); its size in bytes. After an error nothing
  // replaced the previous snapshot. At most once.
  [[nodiscard]] absl::StatusOr<uint64_t> Commit();

 private:
  SnapshotFileWriter(std::string dir, int fd);
  [[nodiscard]] absl::Status Flush();

  const std::string dir_;
  const std::string tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t body_bytes_ = 0;
  std::string buffer_;
  struct HashState;
  std::unique_ptr<HashState> hash_;
};

// The body of the snapshot at `path`, checked against its header:
// NOT_FOUND when there is no file; DATA_LOSS when it is shorter than its
// header, not a snapshot, truncated or extended, or fails its checksum;
// UNIMPLEMENTED when it is another format version than this build's; the
// error of open()/read() otherwise (unreadable).
[[nodiscard]] absl::StatusOr<std::string> ReadSnapshotFile(const std::string& path);

// DIR/kvindex.snapshot.
std::string SnapshotPath(std::string_view dir);

}  // namespace kvindex
