// HOTMEM_IOC_BIND, the one implementation: the addon's bind() and the hotmem-exec launcher both
// call it. No Node dependency, so the launcher links it without the addon.
#ifndef HOTMEM_NATIVE_BIND_H_
#define HOTMEM_NATIVE_BIND_H_

#include <cstdint>

namespace hotmem {

// Binds the process behind pidfd (and every process sharing its mm) to partition through the
// open /dev/hotmem device_fd. wait_ms < 0: an unpopulated partition fails at once (ENXIO);
// wait_ms >= 0: HOTMEM_BIND_WAIT with that timeout (0 waits forever, as the uapi says).
// Retries on EINTR. Returns 0, or -1 with errno set.
int BindToPartition(int device_fd, int pidfd, uint32_t partition, int64_t wait_ms);

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_BIND_H_
