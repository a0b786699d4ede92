#include "core/snapshot/snapshot_format.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/index/block_hash.h"
#include "core/index/extra_keys_hash.h"
#include "core/snapshot/internal/byte_codec.h"

namespace kvindex {

using snapshot_internal::ByteSink;
using snapshot_internal::ByteSource;

std::string EncodeSnapshotHeader(const SnapshotHeader& header) {
  std::string out(kSnapshotMagic, 8);
  ByteSink sink(&out);
  sink.U32(header.version);
  sink.U32(static_cast<uint32_t>(kSnapshotHeaderBytes));
  sink.U64(header.body_bytes);
  sink.U64(header.body_checksum);
  return out;
}

absl::StatusOr<SnapshotHeader> ParseSnapshotHeader(std::string_view file) {
  if (file.size() < kSnapshotHeaderBytes) {
    return absl::DataLossError(absl::StrCat("snapshot is ", file.size(), " bytes, shorter than its header"));
  }
  if (std::memcmp(file.data(), kSnapshotMagic, 8) != 0) return absl::DataLossError("not a kvindex snapshot (magic)");
  ByteSource source(file.substr(8, kSnapshotHeaderBytes - 8));
  SnapshotHeader header;
  uint32_t header_bytes = 0;
  source.U32(header.version);
  source.U32(header_bytes);
  source.U64(header.body_bytes);
  source.U64(header.body_checksum);
  if (header.version == kSnapshotFormatVersion && header_bytes != kSnapshotHeaderBytes) {
    return absl::DataLossError(absl::StrCat("snapshot header says ", header_bytes, " bytes"));
  }
  return header;
}

std::string HashingFingerprint(std::string_view hashing_flags) {
  // Probes of the index hash: a seed, a chained block, a block with extra keys.
  const uint64_t seed = ContextSeed("kvindex-probe", "lora", 16);
  std::vector<uint32_t> tokens(16);
  for (uint32_t i = 0; i < tokens.size(); ++i) tokens[i] = i * 7919u;
  const uint64_t block = HashBlock(seed, tokens);
  ExtraKeysHasher keys;
  keys.AddStr("salt");
  const uint64_t keyed = keys.Hash(block);
  return absl::StrCat("index-hash xxh3-64 chain+extra-keys probes ", absl::Hex(seed, absl::kZeroPad16), " ",
                      absl::Hex(block, absl::kZeroPad16), " ", absl::Hex(keyed, absl::kZeroPad16), "; flags: ",
                      absl::string_view(hashing_flags.data(), hashing_flags.size()));
}

}  // namespace kvindex
