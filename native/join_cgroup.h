// Moving the calling process into a cgroup: hotmem-exec and hotmem-relay both do it before exec.
#ifndef HOTMEM_NATIVE_JOIN_CGROUP_H_
#define HOTMEM_NATIVE_JOIN_CGROUP_H_

#include <string>

namespace hotmem {

// Writes the caller's pid to <dir>/cgroup.procs. Returns 0, or -1 with errno set and *failed_call
// saying what failed ("open <path>", "write <path>").
int JoinCgroup(const std::string& dir, std::string* failed_call);

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_JOIN_CGROUP_H_
