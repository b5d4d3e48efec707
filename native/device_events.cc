#include "device_events.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/hotmem.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "errors.h"

namespace hotmem {

void DeviceEvents::Start(Napi::Env env, const std::string& path, Napi::Function callback,
                         bool referenced, DeviceEvents** owner) {
  int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw ErrnoError(env, errno, "open", path);
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    close(fd);
    throw Napi::Error::New(env, "no libuv event loop to watch " + path + " on");
  }
  DeviceEvents* self = new DeviceEvents(env, fd, callback, owner);
  self->path_ = path;
  int err = uv_poll_init(loop, &self->poll_, fd);
  if (err != 0) {
    self->ReleaseJsState();
    delete self;  // closes fd; the handle never joined the loop
    throw ErrnoError(env, -err, "uv_poll_init", path);
  }
  err = uv_poll_start(&self->poll_, UV_READABLE, OnPoll);
  if (err != 0) {
    self->stopped_ = true;
    self->ReleaseJsState();
    uv_close(reinterpret_cast<uv_handle_t*>(&self->poll_), OnClosed);
    throw ErrnoError(env, -err, "uv_poll_start", path);
  }
  self->SetReferenced(referenced);
  napi_add_env_cleanup_hook(env, OnEnvTeardown, self);
  *owner = self;
}

DeviceEvents::DeviceEvents(Napi::Env env, int fd, Napi::Function callback, DeviceEvents** owner)
    : env_(env),
      fd_(fd),
      callback_(Napi::Persistent(callback)),
      async_context_(std::make_unique<Napi::AsyncContext>(env, "hotmem:events")),
      owner_(owner) {
  poll_.data = this;
}

DeviceEvents::~DeviceEvents() {
  if (fd_ >= 0) close(fd_);
}

void DeviceEvents::ReleaseJsState() {
  callback_.Reset();
  async_context_.reset();
}

void DeviceEvents::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (*owner_ == this) *owner_ = nullptr;
  napi_remove_env_cleanup_hook(env_, OnEnvTeardown, this);
  if (!delivering_) ReleaseJsState();
  uv_poll_stop(&poll_);
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnClosed);
}

void DeviceEvents::SetReferenced(bool referenced) {
  if (stopped_) return;
  uv_handle_t* handle = reinterpret_cast<uv_handle_t*>(&poll_);
  if (referenced) {
    uv_ref(handle);
  } else {
    uv_unref(handle);
  }
}

void DeviceEvents::OnClosed(uv_handle_t* handle) {
  delete static_cast<DeviceEvents*>(handle->data);
}

// Node runs the loop after cleanup hooks until closing handles are done, so Stop() still frees us.
void DeviceEvents::OnEnvTeardown(void* self) { static_cast<DeviceEvents*>(self)->Stop(); }

void DeviceEvents::OnPoll(uv_poll_t* handle, int status, int /*events*/) {
  DeviceEvents* self = static_cast<DeviceEvents*>(handle->data);
  if (self->stopped_) return;
  if (status < 0) {
    self->Deliver(-status, "poll");
    return;
  }
  self->Deliver(0, "");
}

// Reads every queued record (the fd is non-blocking) and hands them to JS in one call; on an
// error, hands over the error and stops watching.
void DeviceEvents::Deliver(int errnum, const std::string& syscall) {
  std::vector<struct hotmem_event> records;
  std::string failed_syscall = syscall;
  // read() returned 0: the file will never deliver again (a FIFO whose writer left).
  bool ended = false;
  alignas(struct hotmem_event) char buffer[64 * sizeof(struct hotmem_event)];
  while (errnum == 0) {
    ssize_t n = read(fd_, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        errnum = errno;
        failed_syscall = "read";
      }
      break;
    }
    if (n == 0) {
      ended = true;
      break;
    }
    // Each record starts with its own size: a newer kernel's longer records are stepped over.
    size_t offset = 0;
    while (offset + sizeof(__u32) <= static_cast<size_t>(n)) {
      __u32 size;
      std::memcpy(&size, buffer + offset, sizeof(size));
      if (size < sizeof(struct hotmem_event) || offset + size > static_cast<size_t>(n)) {
        errnum = EPROTO;
        failed_syscall = "read";
        break;
      }
      struct hotmem_event record;
      std::memcpy(&record, buffer + offset, sizeof(record));
      records.push_back(record);
      offset += size;
    }
  }

  bool failed = errnum != 0 || ended;
  if (records.empty() && !failed) return;

  // After a failure the watch is over before listeners hear of it, so they may start a new one.
  // Stop() leaves the callback and async context alone while delivering_ is set.
  delivering_ = true;
  if (failed) Stop();
  Napi::Env env = env_;
  try {
    Napi::HandleScope scope(env);
    try {
      CallJs(env, records, errnum, failed_syscall, ended);
    } catch (const Napi::Error& thrown) {
      // A throwing listener is an uncaught exception, as for any other event source.
      napi_fatal_exception(env, thrown.Value());
    }
  } catch (const Napi::Error&) {
    // No handle scope: the environment is shutting down and nobody is left to tell.
  }
  delivering_ = false;
  if (stopped_) ReleaseJsState();
}

void DeviceEvents::CallJs(Napi::Env env, const std::vector<struct hotmem_event>& records,
                          int errnum, const std::string& failed_syscall, bool ended) {
  Napi::Value error = env.Null();
  if (errnum != 0) {
    error = ErrnoError(env, errnum, failed_syscall, path_).Value();
  } else if (ended) {
    error = Napi::Error::New(env, "event stream of " + path_ + " ended").Value();
  }
  Napi::Array array = Napi::Array::New(env, records.size());
  for (uint32_t i = 0; i < records.size(); i++) {
    const struct hotmem_event& record = records[i];
    Napi::Object object = Napi::Object::New(env);
    object.Set("type", Napi::Number::New(env, record.type));
    object.Set("partition", Napi::Number::New(env, record.partition));
    object.Set("seq", Napi::BigInt::New(env, static_cast<uint64_t>(record.seq)));
    object.Set("timestampNs", Napi::BigInt::New(env, static_cast<uint64_t>(record.timestamp_ns)));
    object.Set("data", Napi::BigInt::New(env, static_cast<uint64_t>(record.data)));
    array.Set(i, object);
  }
  callback_.Value().MakeCallback(env.Global(), {error, array}, *async_context_);
}

}  // namespace hotmem
