#include "join_cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

namespace hotmem {

int JoinCgroup(const std::string& dir, std::string* failed_call) {
  std::string procs = dir + "/cgroup.procs";
  int fd = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    *failed_call = "open " + procs;
    return -1;
  }
  // The pid rather than "0" (the writer itself): the same on cgroupfs and on the plain files
  // the unit tests lay out as a cgroup tree.
  std::string pid = std::to_string(getpid());
  ssize_t written = write(fd, pid.data(), pid.size());
  int saved = errno;
  close(fd);
  if (written != static_cast<ssize_t>(pid.size())) {
    *failed_call = "write " + procs;
    errno = written < 0 ? saved : EIO;
    return -1;
  }
  return 0;
}

}  // namespace hotmem
