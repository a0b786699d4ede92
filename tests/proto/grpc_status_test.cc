#include "proto/grpc_status.h"

#include "gtest/gtest.h"

namespace kvindex {
namespace {

TEST(GrpcStatusTest, CodeAndMessageCarryOverBothWays) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  const grpc::Status status = ToGrpcStatus(absl::InvalidArgumentError("bad"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "bad");
  EXPECT_EQ(ToGrpcStatus(absl::UnauthenticatedError("x")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  for (int code = 1; code <= 16; ++code) {
    const absl::Status original(static_cast<absl::StatusCode>(code), "message");
    EXPECT_EQ(FromGrpcStatus(ToGrpcStatus(original)), original) << code;
    EXPECT_EQ(ToAbslCode(static_cast<grpc::StatusCode>(code)), original.code()) << code;
  }
}

}  // namespace
}  // namespace kvindex
