// hotmem-relay --stdout FILE --stderr FILE --limit-bytes N [--pid-file FILE] [--cgroup DIR]
//              -- cmd args...
//
// Gives the command pipes for stdout and stderr and starts a relay process that copies them into
// the two files, keeping each within N bytes (output_relay.h); then execs the command in its own
// place, so the pid the caller spawned is the command's. The relay is not the agent: it outlives
// an agent restart, so the command never meets a closed pipe (SIGPIPE) and its files never
// grow unbounded. It exits once every write end of the pipes is closed.
//
// The relay is started before --cgroup is joined, so it runs outside the instance's cgroup: it is
// neither charged to a memory-limited instance nor killed with its stragglers before it has
// copied their last output, and it is not bound to the instance's HotMem partition (hotmem-exec
// comes after it in the exec chain). It is double-forked, so the command never has it as a child
// it might wait for; it is reparented to the nearest subreaper (the agent) or init, and sits in
// its own session, out of reach of signals to the command's process group. --pid-file receives
// its pid before the command starts: the agent waits for it to exit before a last read.
//
// Exit status before the exec: 125 usage error, 126 setup failure (pipes, files, cgroup),
// 127 exec failure; otherwise the command's own.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "join_cgroup.h"
#include "output_relay.h"

namespace {

constexpr int kExitUsage = 125;
constexpr int kExitSetupFailed = 126;
constexpr int kExitExecFailed = 127;
constexpr uint64_t kMaxLimitBytes = 1ULL << 40;

struct Options {
  const char* stdout_path = nullptr;
  const char* stderr_path = nullptr;
  uint64_t limit_bytes = 0;
  const char* pid_file = nullptr;
  const char* cgroup = nullptr;
  char** command = nullptr;
};

[[noreturn]] void Fail(int status, const std::string& what, int errnum) {
  std::fprintf(stderr, "hotmem-relay: %s: %s\n", what.c_str(), std::strerror(errnum));
  std::exit(status);
}

[[noreturn]] void Usage(const std::string& problem) {
  std::fprintf(stderr,
               "hotmem-relay: %s\nusage: hotmem-relay --stdout FILE --stderr FILE --limit-bytes N "
               "[--pid-file FILE] [--cgroup DIR] -- cmd args...\n",
               problem.c_str());
  std::exit(kExitUsage);
}

uint64_t ParseLimit(const char* text) {
  char* end = nullptr;
  errno = 0;
  unsigned long long value = std::strtoull(text, &end, 10);
  // Room for the marker line and some output after it.
  uint64_t min = 2 * hotmem::kMaxMarkerBytes;
  if (*text < '0' || *text > '9' || *end != '\0' || errno != 0 || value < min ||
      value > kMaxLimitBytes) {
    Usage("--limit-bytes wants an integer in [" + std::to_string(min) + ", " +
          std::to_string(kMaxLimitBytes) + "], not '" + text + "'");
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
    bool known = arg == "--stdout" || arg == "--stderr" || arg == "--limit-bytes" ||
                 arg == "--pid-file" || arg == "--cgroup";
    if (!known) Usage("unknown option '" + arg + "'");
    if (i + 1 >= argc) Usage(arg + " needs a value");
    const char* value = argv[++i];
    if (arg == "--stdout") options.stdout_path = value;
    if (arg == "--stderr") options.stderr_path = value;
    if (arg == "--limit-bytes") options.limit_bytes = ParseLimit(value);
    if (arg == "--pid-file") options.pid_file = value;
    if (arg == "--cgroup") options.cgroup = value;
  }
  if (options.stdout_path == nullptr || options.stderr_path == nullptr) {
    Usage("--stdout and --stderr are needed");
  }
  if (options.limit_bytes == 0) Usage("--limit-bytes is needed");
  if (i >= argc) Usage("no command after '--'");
  options.command = argv + i;
  return options;
}

// The relay's own process: the read ends, /dev/null for its stdio, nothing of the command's.
[[noreturn]] void RunRelay(const Options& options, int stdout_read, int stderr_read) {
  setsid();
  signal(SIGPIPE, SIG_IGN);
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    for (int fd = 0; fd <= 2; fd++) dup2(null_fd, fd);
  }
  hotmem::RelayedStream streams[2] = {{"stdout", options.stdout_path, stdout_read},
                                      {"stderr", options.stderr_path, stderr_read}};
  _exit(hotmem::RelayOutput(streams, options.limit_bytes) == 0 ? 0 : 1);
}

bool WritePidFile(const char* path, pid_t pid) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::string text = std::to_string(pid) + "\n";
  bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  return close(fd) == 0 && written;
}

// Forks twice: the middle process reports the relay's pid and exits, so the relay is nobody's
// child here. Returns once the pid file is written.
void StartRelay(const Options& options, int stdout_pipe[2], int stderr_pipe[2]) {
  pid_t middle = fork();
  if (middle < 0) Fail(kExitSetupFailed, "fork", errno);
  if (middle == 0) {
    pid_t relay = fork();
    if (relay < 0) _exit(1);
    if (relay == 0) {
      close(stdout_pipe[1]);
      close(stderr_pipe[1]);
      RunRelay(options, stdout_pipe[0], stderr_pipe[0]);
    }
    if (options.pid_file != nullptr && !WritePidFile(options.pid_file, relay)) _exit(2);
    _exit(0);
  }
  int status = 0;
  while (waitpid(middle, &status, 0) < 0) {
    if (errno != EINTR) Fail(kExitSetupFailed, "wait for the relay's start", errno);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    bool pid_file_failed = WIFEXITED(status) && WEXITSTATUS(status) == 2;
    Fail(kExitSetupFailed,
         pid_file_failed ? std::string("write ") + options.pid_file : "start the relay",
         pid_file_failed ? EIO : EAGAIN);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options options = ParseOptions(argc, argv);
  int stdout_pipe[2];
  int stderr_pipe[2];
  if (pipe2(stdout_pipe, O_CLOEXEC) < 0 || pipe2(stderr_pipe, O_CLOEXEC) < 0) {
    Fail(kExitSetupFailed, "pipe2", errno);
  }
  // Checked here, where a failure can still be reported: the relay has no stderr of its own.
  for (const char* path : {options.stdout_path, options.stderr_path}) {
    if (access(path, W_OK) < 0) Fail(kExitSetupFailed, std::string("open ") + path, errno);
  }
  StartRelay(options, stdout_pipe, stderr_pipe);
  // dup2 leaves the new descriptors without O_CLOEXEC: only they survive the exec.
  if (dup2(stdout_pipe[1], STDOUT_FILENO) < 0 || dup2(stderr_pipe[1], STDERR_FILENO) < 0) {
    Fail(kExitSetupFailed, "dup2", errno);
  }
  std::string failed_call;
  if (options.cgroup != nullptr && hotmem::JoinCgroup(options.cgroup, &failed_call) < 0) {
    Fail(kExitSetupFailed, "join cgroup: " + failed_call, errno);
  }
  execvp(options.command[0], options.command);
  Fail(kExitExecFailed, std::string("exec ") + options.command[0], errno);
}
