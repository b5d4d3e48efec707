#include "process.h"

#include <dirent.h>
#include <errno.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "errors.h"
#include "sysfs.h"

// Older libc headers lack these; the numbers are the same on every architecture (asm-generic).
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

namespace hotmem {

namespace {

// pidfdOpen(pid): number (a close-on-exec pidfd).
Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  int32_t pid = ArgInt32(info, 0, "pid");
  if (pid <= 0) throw Napi::TypeError::New(info.Env(), "argument 'pid' must be a positive pid");
  long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) throw ErrnoError(info.Env(), errno, "pidfd_open", "");
  return Napi::Number::New(info.Env(), static_cast<double>(fd));
}

// pidfdSendSignal(pidfd, signal): void. Signal 0 only checks that the process still exists.
void PidfdSendSignal(const Napi::CallbackInfo& info) {
  int32_t fd = ArgInt32(info, 0, "pidfd");
  int32_t signal = ArgInt32(info, 1, "signal");
  if (signal < 0 || signal >= NSIG) {
    throw Napi::TypeError::New(info.Env(), "argument 'signal' must be a signal number in [0, " +
                                               std::to_string(NSIG) + ")");
  }
  if (syscall(SYS_pidfd_send_signal, fd, signal, nullptr, 0) < 0) {
    throw ErrnoError(info.Env(), errno, "pidfd_send_signal", "");
  }
}

// closeFd(fd): void.
void CloseFd(const Napi::CallbackInfo& info) {
  int32_t fd = ArgInt32(info, 0, "fd");
  // Linux releases the descriptor even when close() reports EINTR, so never retry.
  if (close(fd) < 0 && errno != EINTR) throw ErrnoError(info.Env(), errno, "close", "");
}

// setChildSubreaper(): orphaned descendants are reparented to this process instead of init.
void SetChildSubreaper(const Napi::CallbackInfo& info) {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
    throw ErrnoError(info.Env(), errno, "prctl", "");
  }
}

Napi::Object ExitRecord(Napi::Env env, const siginfo_t& exited) {
  Napi::Object record = Napi::Object::New(env);
  record.Set("pid", Napi::Number::New(env, exited.si_pid));
  bool by_signal = exited.si_code == CLD_KILLED || exited.si_code == CLD_DUMPED;
  record.Set("code", by_signal ? env.Null() : Napi::Number::New(env, exited.si_status));
  record.Set("signal", by_signal ? Napi::Number::New(env, exited.si_status) : env.Null());
  return record;
}

// Reaps pid if it is an exited child; true when it was.
bool ReapChild(pid_t pid, siginfo_t* exited) {
  exited->si_pid = 0;
  int ret;
  do {
    ret = waitid(P_PID, static_cast<id_t>(pid), exited, WEXITED | WNOHANG);
  } while (ret < 0 && errno == EINTR);
  return ret == 0 && exited->si_pid == pid;
}

// Our zombie children, found in /proc: waitid(P_ALL) cannot skip over the child it keeps
// reporting, so once that child is one libuv owns, this is how to see the others.
std::vector<pid_t> ZombieChildren() {
  std::vector<pid_t> zombies;
  std::string self = std::to_string(getpid());
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return zombies;
  while (struct dirent* entry = readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    std::string stat;
    SystemFailure ignored;  // the process may be gone by now
    if (!ReadAttribute(std::string("/proc/") + entry->d_name + "/stat", &stat, &ignored)) continue;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses; parse after the last ')'.
    size_t close_paren = stat.rfind(')');
    if (close_paren == std::string::npos || close_paren + 4 >= stat.size()) continue;
    char state = stat[close_paren + 2];
    std::string rest = stat.substr(close_paren + 4);
    std::string ppid = rest.substr(0, rest.find(' '));
    if (state == 'Z' && ppid == self) zombies.push_back(static_cast<pid_t>(pid));
  }
  closedir(proc);
  return zombies;
}

// reapOrphans(knownPids): [{ pid, code, signal }] for every exited child not in knownPids.
// knownPids are the children libuv spawned and will reap itself; taking their status would break
// child_process. Peek with WNOWAIT first: the common case needs no /proc scan.
Napi::Value ReapOrphans(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) {
    throw Napi::TypeError::New(env, "argument 'knownPids' must be an array of pids");
  }
  Napi::Array known_array = info[0].As<Napi::Array>();
  std::set<pid_t> known;
  for (uint32_t i = 0; i < known_array.Length(); i++) {
    Napi::Value value = known_array.Get(i);
    if (!value.IsNumber()) {
      throw Napi::TypeError::New(env, "knownPids[" + std::to_string(i) + "] must be a pid number");
    }
    known.insert(value.As<Napi::Number>().Int32Value());
  }

  std::vector<siginfo_t> reaped;
  for (;;) {
    siginfo_t peeked = {};
    int ret;
    do {
      ret = waitid(P_ALL, 0, &peeked, WEXITED | WNOHANG | WNOWAIT);
    } while (ret < 0 && errno == EINTR);
    if (ret < 0) {
      if (errno == ECHILD) break;  // no children at all
      throw ErrnoError(env, errno, "waitid", "");
    }
    if (peeked.si_pid == 0) break;  // children, none exited
    if (known.count(peeked.si_pid) != 0) {
      for (pid_t zombie : ZombieChildren()) {
        siginfo_t exited = {};
        if (known.count(zombie) == 0 && ReapChild(zombie, &exited)) reaped.push_back(exited);
      }
      break;
    }
    siginfo_t exited = {};
    if (!ReapChild(peeked.si_pid, &exited)) break;
    reaped.push_back(exited);
  }

  Napi::Array result = Napi::Array::New(env, reaped.size());
  for (uint32_t i = 0; i < reaped.size(); i++) result.Set(i, ExitRecord(env, reaped[i]));
  return result;
}

}  // namespace

void InitProcess(Napi::Env env, Napi::Object exports) {
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen, "pidfdOpen"));
  exports.Set("pidfdSendSignal", Napi::Function::New(env, PidfdSendSignal, "pidfdSendSignal"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("setChildSubreaper",
              Napi::Function::New(env, SetChildSubreaper, "setChildSubreaper"));
  exports.Set("reapOrphans", Napi::Function::New(env, ReapOrphans, "reapOrphans"));
}

}  // namespace hotmem
