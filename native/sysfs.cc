#include "sysfs.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "promise_worker.h"

namespace hotmem {

bool ReadAttribute(const std::string& path, std::string* contents, SystemFailure* failure) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    failure->Set(errno, "open", path);
    return false;
  }
  contents->clear();
  char buffer[4096];
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      failure->Set(errno, "read", path);
      close(fd);
      return false;
    }
    if (n == 0) break;
    contents->append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return true;
}

bool WriteAttribute(const std::string& path, const std::string& value, SystemFailure* failure) {
  // O_TRUNC matters only for the regular files of a test tree; sysfs ignores it.
  int fd = open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) {
    failure->Set(errno, "open", path);
    return false;
  }
  ssize_t n;
  do {
    n = write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  bool ok = n == static_cast<ssize_t>(value.size());
  if (!ok) {
    failure->Set(n < 0 ? errno : EIO, "write", path);
  }
  close(fd);
  return ok;
}

std::string TrimNewline(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

namespace {

class ReadWorker : public PromiseWorker {
 public:
  ReadWorker(Napi::Env env, std::string path)
      : PromiseWorker(env, "hotmem:readAttribute"), path_(std::move(path)) {}

 private:
  void Execute() override { ReadAttribute(path_, &contents_, &failure_); }
  Napi::Value Resolve(Napi::Env env) override { return Napi::String::New(env, contents_); }

  std::string path_;
  std::string contents_;
};

class WriteWorker : public PromiseWorker {
 public:
  WriteWorker(Napi::Env env, std::string path, std::string value)
      : PromiseWorker(env, "hotmem:writeAttribute"),
        path_(std::move(path)),
        value_(std::move(value)) {}

 private:
  void Execute() override { WriteAttribute(path_, value_, &failure_); }

  std::string path_;
  std::string value_;
};

// readAttribute(path): Promise<string>, the raw contents.
Napi::Value ReadAttributeAsync(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return (new ReadWorker(info.Env(), std::move(path)))->Start();
}

// readAttributeSync(path): string — for the few reads the API exposes synchronously
// (block_size_bytes), which sysfs answers from memory.
Napi::Value ReadAttributeSync(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  std::string contents;
  SystemFailure failure;
  if (!ReadAttribute(path, &contents, &failure)) {
    throw ErrnoError(info.Env(), failure);
  }
  return Napi::String::New(info.Env(), contents);
}

// writeAttribute(path, value): Promise<void>; onlining/offlining a block can take seconds.
Napi::Value WriteAttributeAsync(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  std::string value = ArgString(info, 1, "value");
  return (new WriteWorker(info.Env(), std::move(path), std::move(value)))->Start();
}

}  // namespace

void InitSysfs(Napi::Env env, Napi::Object exports) {
  exports.Set("readAttribute", Napi::Function::New(env, ReadAttributeAsync, "readAttribute"));
  exports.Set("readAttributeSync",
              Napi::Function::New(env, ReadAttributeSync, "readAttributeSync"));
  exports.Set("writeAttribute", Napi::Function::New(env, WriteAttributeAsync, "writeAttribute"));
}

}  // namespace hotmem
