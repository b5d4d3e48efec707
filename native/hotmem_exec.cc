// hotmem-exec [--device PATH] [--partition N] [--wait-ms T] [--cgroup DIR] -- cmd args...
//
// Joins the cgroup, binds itself to a HotMem partition, then execs the command: the binding lives
// on the mm and execve keeps it, so the command is bound before its first instruction.
// --wait-ms T lets the kernel wait up to T ms for the partition to be populated (0: forever).
// Exit status: 125 usage error, 126 cgroup or bind failure, 127 exec failure (as env(1) and the
// shell use them); otherwise the command's own.
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bind.h"
#include "join_cgroup.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

namespace {

constexpr int kExitUsage = 125;
constexpr int kExitSetupFailed = 126;
constexpr int kExitExecFailed = 127;

struct Options {
  const char* device = "/dev/hotmem";
  long long partition = -1;  // -1: do not bind
  long long wait_ms = -1;    // -1: do not wait for the partition to be populated
  const char* cgroup = nullptr;
  char** command = nullptr;
};

[[noreturn]] void Fail(int status, const std::string& what, int errnum) {
  std::fprintf(stderr, "hotmem-exec: %s: %s\n", what.c_str(), std::strerror(errnum));
  std::exit(status);
}

[[noreturn]] void Usage(const std::string& problem) {
  std::fprintf(stderr,
               "hotmem-exec: %s\nusage: hotmem-exec [--device PATH] [--partition N] "
               "[--wait-ms T] [--cgroup DIR] -- cmd args...\n",
               problem.c_str());
  std::exit(kExitUsage);
}

long long ParseCount(const char* option, const char* text, long long max) {
  char* end = nullptr;
  errno = 0;
  long long value = std::strtoll(text, &end, 10);
  if (*text == '\0' || *end != '\0' || errno != 0 || value < 0 || value > max) {
    Usage(std::string(option) + " wants an integer in [0, " + std::to_string(max) + "], not '" +
          text + "'");
  }
  return value;
}

Options ParseOptions(int argc, char** argv) {
  Options options;
  int i = 1;
  for (; i < argc; i++) {
    std::string arg = argv[i];
    if (arg == "--") {
      i++;
      break;
    }
    if (i + 1 >= argc) Usage(arg == "--device" || arg == "--partition" || arg == "--wait-ms" ||
                                     arg == "--cgroup"
                                 ? arg + " needs a value"
                                 : "unknown option '" + arg + "'");
    const char* value = argv[++i];
    if (arg == "--device") {
      options.device = value;
    } else if (arg == "--partition") {
      options.partition = ParseCount("--partition", value, UINT32_MAX);
    } else if (arg == "--wait-ms") {
      // Kept below 2^64 ns once converted.
      options.wait_ms = ParseCount("--wait-ms", value, 1000LL * 1000 * 1000 * 1000);
    } else if (arg == "--cgroup") {
      options.cgroup = value;
    } else {
      Usage("unknown option '" + arg + "'");
    }
  }
  if (i >= argc) Usage("no command after '--'");
  if (options.wait_ms >= 0 && options.partition < 0) Usage("--wait-ms needs --partition");
  options.command = argv + i;
  return options;
}

void BindSelf(const Options& options) {
  std::string what = "bind to partition " + std::to_string(options.partition) + " via " +
                     options.device;
  int device = open(options.device, O_RDWR | O_CLOEXEC);
  if (device < 0) Fail(kExitSetupFailed, what + ": open", errno);
  long pidfd = syscall(SYS_pidfd_open, getpid(), 0);
  if (pidfd < 0) Fail(kExitSetupFailed, what + ": pidfd_open", errno);
  if (hotmem::BindToPartition(device, static_cast<int>(pidfd),
                              static_cast<uint32_t>(options.partition), options.wait_ms) < 0) {
    Fail(kExitSetupFailed, what + ": ioctl HOTMEM_IOC_BIND", errno);
  }
  close(static_cast<int>(pidfd));
  close(device);
}

}  // namespace

int main(int argc, char** argv) {
  Options options = ParseOptions(argc, argv);
  std::string failed_call;
  if (options.cgroup != nullptr && hotmem::JoinCgroup(options.cgroup, &failed_call) < 0) {
    Fail(kExitSetupFailed, "join cgroup: " + failed_call, errno);
  }
  if (options.partition >= 0) BindSelf(options);
  execvp(options.command[0], options.command);
  Fail(kExitExecFailed, std::string("exec ") + options.command[0], errno);
}
