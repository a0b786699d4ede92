#include "tools/sim/reference_hash.h"

#include <xxhash.h>

#include <string>

namespace kvindex::sim {
namespace {

void Le32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void Le64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t Xxh3(const std::string& bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

// enc(K), README "Extra keys".
void Encode(std::string& out, const ExtraKey& key) {
  switch (key.kind) {
    case ExtraKey::Kind::kNil:
      out.push_back('n');
      return;
    case ExtraKey::Kind::kInt:
      out.push_back(key.number_unsigned ? 'u' : 'i');
      Le64(out, static_cast<uint64_t>(key.number));
      return;
    case ExtraKey::Kind::kStr:
    case ExtraKey::Kind::kBytes:
      out.push_back(key.kind == ExtraKey::Kind::kStr ? 's' : 'b');
      Le32(out, static_cast<uint32_t>(key.bytes.size()));
      out += key.bytes;
      return;
    case ExtraKey::Kind::kList:
      out.push_back('l');
      Le32(out, static_cast<uint32_t>(key.items.size()));
      for (const ExtraKey& item : key.items) Encode(out, item);
      return;
  }
}

}  // namespace

uint64_t ReferenceSeed(std::string_view model, std::string_view lora_name, uint32_t block_size) {
  std::string bytes(model);
  bytes.push_back('\0');
  bytes += lora_name;
  bytes.push_back('\0');
  Le32(bytes, block_size);
  return Xxh3(bytes);
}

uint64_t ReferenceBlockHash(uint64_t parent, absl::Span<const uint32_t> tokens) {
  std::string bytes;
  Le64(bytes, parent);
  for (uint32_t t : tokens) Le32(bytes, t);
  return Xxh3(bytes);
}

uint64_t ReferenceWithExtraKeys(uint64_t h, const ExtraKey& keys) {
  if (keys.kind != ExtraKey::Kind::kList || keys.items.empty()) return h;
  std::string bytes;
  Le64(bytes, h);
  Encode(bytes, keys);
  return Xxh3(bytes);
}

}  // namespace kvindex::sim
