#include "tests/testing/dead_port.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvindex::testutil {

absl::StatusOr<std::unique_ptr<DeadPort>> DeadPort::Bind(Takeover takeover) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  if (takeover == Takeover::kByReuseAddr) {
    const int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
      const int error = errno;
      close(fd);
      return absl::UnavailableError(absl::StrCat("SO_REUSEADDR: ", std::strerror(error)));
    }
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("bind 127.0.0.1:0: ", std::strerror(error)));
  }
  return std::unique_ptr<DeadPort>(new DeadPort(fd, ntohs(addr.sin_port)));
}

DeadPort::~DeadPort() { close(fd_); }

}  // namespace kvindex::testutil
