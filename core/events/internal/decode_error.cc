#include "core/events/internal/decode_error.h"

namespace kvindex::decoding {

absl::Status Fail(DecodeErrorReason reason, const Loc& loc, std::string_view what) {
  std::string msg = Cat(DecodeErrorReasonName(reason), ": ");
  if (loc.event >= 0) msg += Cat("event ", loc.event, ": ");
  if (!loc.field.empty()) msg += Cat(loc.field, ": ");
  msg.append(what);
  return absl::InvalidArgumentError(msg);
}

}  // namespace kvindex::decoding
