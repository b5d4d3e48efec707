#include "bind.h"

#include <errno.h>
#include <linux/hotmem.h>
#include <sys/ioctl.h>

namespace hotmem {

int BindToPartition(int device_fd, int pidfd, uint32_t partition, int64_t wait_ms) {
  struct hotmem_bind bind = {};
  bind.size = sizeof(bind);
  bind.pidfd = static_cast<__s32>(pidfd);
  bind.partition = static_cast<__u32>(partition);
  if (wait_ms >= 0) {
    bind.flags = HOTMEM_BIND_WAIT;
    bind.timeout_ns = static_cast<__u64>(wait_ms) * 1000000ULL;
  }
  int ret;
  do {
    ret = ioctl(device_fd, HOTMEM_IOC_BIND, &bind);
  } while (ret < 0 && errno == EINTR);
  return ret < 0 ? -1 : 0;
}

}  // namespace hotmem
