#include "core/snapshot/snapshot_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/snapshot/snapshot_format.h"

namespace kvindex {
namespace {

constexpr size_t kBufferBytes = 1 << 20;

absl::Status Errno(std::string_view what, const std::string& path) {
  const int e = errno;
  const std::string message =
      absl::StrCat(absl::string_view(what.data(), what.size()), " ", path, ": ", std::strerror(e));
  switch (e) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::UnavailableError(message);
  }
}

bool WriteAll(int fd, const char* data, size_t n, off_t offset, bool positioned) {
  while (n > 0) {
    const ssize_t w = positioned ? pwrite(fd, data, n, offset) : write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
    offset += w;
  }
  return true;
}

}  // namespace

struct SnapshotFileWriter::HashState {
  HashState() : state(XXH3_createState()) { XXH3_64bits_reset(state); }
  ~HashState() { XXH3_freeState(state); }
  XXH3_state_t* state;
};

std::string SnapshotPath(std::string_view dir) {
  return absl::StrCat(absl::string_view(dir.data(), dir.size()), "/", kSnapshotFileName);
}

absl::StatusOr<std::unique_ptr<SnapshotFileWriter>> SnapshotFileWriter::Create(const std::string& dir) {
  const std::string tmp = SnapshotPath(dir) + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", tmp);
  std::unique_ptr<SnapshotFileWriter> writer(new SnapshotFileWriter(dir, fd));
  // The header's place, filled in by Commit().
  if (!WriteAll(fd, std::string(kSnapshotHeaderBytes, '\0').data(), kSnapshotHeaderBytes, 0, false)) {
    return Errno("cannot write", tmp);
  }
  return writer;
}

SnapshotFileWriter::SnapshotFileWriter(std::string dir, int fd)
    : dir_(std::move(dir)), tmp_path_(SnapshotPath(dir_) + ".tmp"), fd_(fd), hash_(std::make_unique<HashState>()) {
  buffer_.reserve(kBufferBytes);
}

SnapshotFileWriter::~SnapshotFileWriter() {
  if (fd_ >= 0) close(fd_);
  if (!committed_) unlink(tmp_path_.c_str());
}

absl::Status SnapshotFileWriter::Append(std::string_view bytes) {
  XXH3_64bits_update(hash_->state, bytes.data(), bytes.size());
  body_bytes_ += bytes.size();
  if (buffer_.size() + bytes.size() > kBufferBytes) {
    if (absl::Status s = Flush(); !s.ok()) return s;
  }
  if (bytes.size() >= kBufferBytes) {
    if (!WriteAll(fd_, bytes.data(), bytes.size(), 0, false)) return Errno("cannot write", tmp_path_);
    return absl::OkStatus();
  }
  buffer_.append(bytes.data(), bytes.size());
  return absl::OkStatus();
}

absl::Status SnapshotFileWriter::Flush() {
  if (!WriteAll(fd_, buffer_.data(), buffer_.size(), 0, false)) return Errno("cannot write", tmp_path_);
  buffer_.clear();
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> SnapshotFileWriter::Commit() {
  if (committed_ || fd_ < 0) return absl::FailedPreconditionError("snapshot already committed");
  if (absl::Status s = Flush(); !s.ok()) return s;
  const std::string header = EncodeSnapshotHeader(
      SnapshotHeader{kSnapshotFormatVersion, body_bytes_, XXH3_64bits_digest(hash_->state)});
  if (!WriteAll(fd_, header.data(), header.size(), 0, true)) return Errno("cannot write", tmp_path_);
  if (fsync(fd_) != 0) return Errno("cannot fsync", tmp_path_);
  const int closed = close(fd_);
  fd_ = -1;
  if (closed != 0) return Errno("cannot close", tmp_path_);
  const std::string path = SnapshotPath(dir_);
  if (rename(tmp_path_.c_str(), path.c_str()) != 0) return Errno("cannot rename to", path);
  committed_ = true;
  // The rename is durable once the directory is.
  const int dir_fd = open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Errno("cannot open", dir_);
  const int synced = fsync(dir_fd);
  close(dir_fd);
  if (synced != 0) return Errno("cannot fsync", dir_);
  return kSnapshotHeaderBytes + body_bytes_;
}

absl::StatusOr<std::string> ReadSnapshotFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open", path);
  std::string file;
  struct stat st;
  if (fstat(fd, &st) == 0 && st.st_size > 0) file.reserve(static_cast<size_t>(st.st_size));
  char chunk[1 << 16];
  for (;;) {
    const ssize_t r = read(fd, chunk, sizeof(chunk));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      absl::Status error = Errno("cannot read", path);
      close(fd);
      return error;
    }
    if (r == 0) break;
    file.append(chunk, static_cast<size_t>(r));
  }
  close(fd);
  absl::StatusOr<SnapshotHeader> header = ParseSnapshotHeader(file);
  if (!header.ok()) return header.status();
  if (header->version != kSnapshotFormatVersion) {
    return absl::UnimplementedError(absl::StrCat("snapshot format version ", header->version, ", this build reads ",
                                                 kSnapshotFormatVersion));
  }
  const uint64_t body = file.size() - kSnapshotHeaderBytes;
  if (header->body_bytes != body) {
    return absl::DataLossError(absl::StrCat("snapshot body is ", body, " bytes, its header says ", header->body_bytes,
                                            " (truncated?)"));
  }
  if (XXH3_64bits(file.data() + kSnapshotHeaderBytes, body) != header->body_checksum) {
    return absl::DataLossError("snapshot checksum mismatch");
  }
  file.erase(0, kSnapshotHeaderBytes);
  return file;
}

}  // namespace kvindex
