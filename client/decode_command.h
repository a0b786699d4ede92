#pragma once

// `kvindex decode FILE...`: prints engine KV-event payload files as JSON.

#include <ostream>
#include <span>
#include <string_view>

namespace kvindex {

// Runs `kvindex decode` with `args` (the words after "decode"). Each FILE
// ("-": stdin) is read as one msgpack payload and decoded with
// DecodeEventBatch(). One FILE prints its JSON object to `out`; several print
// a JSON array of the objects that decoded, in argument order. A FILE that
// cannot be read or decoded prints "kvindex decode: FILE: REASON: detail" to
// `err` and the others still print. Returns 0 if every FILE decoded, 1 if any
// failed, 2 on a usage error (no FILE, unknown option). "--help" prints usage
// to `out` and returns 0.
int RunDecodeCommand(std::span<const std::string_view> args, std::ostream& out,
                     std::ostream& err);

}  // namespace kvindex
