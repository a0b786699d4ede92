#pragma once

// The snapshot file: what kvindex-server writes into --snapshot_dir and
// loads at start (README "Snapshots"). One file, replaced atomically:
//
//   file    = header body
//   header  = "KVIXSNAP" LE32(version) LE32(32) LE64(body bytes) LE64(XXH3-64 of the body)   (32 bytes)
//   body    = Str(hashing fingerprint) LE64(created, Unix microseconds)
//             LE64(pod count) pod*  ('W' worker)*  'E'
//
// Fields are little-endian; Str is LE32 length + bytes; pod and worker
// records are internal/snapshot_records.h's. A reader refuses, and loads
// nothing from, a file whose header is short or not "KVIXSNAP" (corrupt),
// whose version is not kFormatVersion (version), whose length or checksum
// does not match its body (corrupt: truncated, flipped), or whose hashing
// fingerprint is not the reader's (hashing: the index hashes it holds would
// not be the ones this process computes).
//
// Pure functions; thread-safe.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kvindex {

inline constexpr char kSnapshotMagic[] = "KVIXSNAP";  // 8 bytes, no NUL in the file
inline constexpr uint32_t kSnapshotFormatVersion = 1;
inline constexpr size_t kSnapshotHeaderBytes = 32;
inline constexpr char kSnapshotFileName[] = "kvindex.snapshot";
// Tags of the body's records after the pods.
inline constexpr char kSnapshotWorkerTag = 'W';
inline constexpr char kSnapshotEndTag = 'E';

struct SnapshotHeader {
  uint32_t version = kSnapshotFormatVersion;
  uint64_t body_bytes = 0;
  uint64_t body_checksum = 0;  // XXH3-64, seed 0
};

// The 32 header bytes.
std::string EncodeSnapshotHeader(const SnapshotHeader& header);

// The header at the start of `file`: DATA_LOSS when it is shorter than a
// header or does not start with the magic. (The version is returned as read:
// the caller decides what it accepts.)
absl::StatusOr<SnapshotHeader> ParseSnapshotHeader(std::string_view file);

// What the index hashes of a snapshot depend on, as a string both writer and
// reader compute: the index hash's definition (README "Index hash", probed by
// hashing fixed inputs with this build's code, so a changed hash changes it)
// and `hashing_flags`, the caller's flags that change hashing (none today:
// kvindex-server passes "").
std::string HashingFingerprint(std::string_view hashing_flags);

}  // namespace kvindex
