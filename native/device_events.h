// Delivers /dev/hotmem event records to JS as they arrive, without polling: a libuv uv_poll_t on a
// second, non-blocking open of the device (each open file has its own event queue, so opening it
// only while someone listens keeps an idle queue from overflowing).
#ifndef HOTMEM_NATIVE_DEVICE_EVENTS_H_
#define HOTMEM_NATIVE_DEVICE_EVENTS_H_

#include <napi.h>
#include <uv.h>

#include <linux/hotmem.h>

#include <memory>
#include <string>
#include <vector>

namespace hotmem {

class DeviceEvents {
 public:
  // Opens path and starts watching; callback(error, records[]) runs on the JS thread. *owner
  // points at the watch until it stops (by Stop() or after delivering an error), then is nulled.
  // Throws the open error.
  static void Start(Napi::Env env, const std::string& path, Napi::Function callback,
                    bool referenced, DeviceEvents** owner);
  // Stops watching and closes the file; the object deletes itself once libuv released the handle.
  void Stop();
  // Whether an active watch keeps the event loop (the process) alive.
  void SetReferenced(bool referenced);

 private:
  DeviceEvents(Napi::Env env, int fd, Napi::Function callback, DeviceEvents** owner);
  ~DeviceEvents();

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnClosed(uv_handle_t* handle);
  static void OnEnvTeardown(void* self);

  void Deliver(int errnum, const std::string& syscall);
  void CallJs(Napi::Env env, const std::vector<struct hotmem_event>& records, int errnum,
              const std::string& failed_syscall, bool ended);
  void ReleaseJsState();

  Napi::Env env_;
  int fd_;
  std::string path_;
  uv_poll_t poll_;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
  DeviceEvents** owner_;
  bool stopped_ = false;
  bool delivering_ = false;
};

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_DEVICE_EVENTS_H_
