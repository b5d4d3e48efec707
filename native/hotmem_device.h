// /dev/hotmem: the ioctls of <linux/hotmem.h> on one open file. Fast queries are synchronous;
// HOTMEM_IOC_BIND (which may wait for a partition to be populated) and HOTMEM_IOC_RECLAIM (which
// offlines blocks) run on the thread pool and return Promises.
#ifndef HOTMEM_NATIVE_HOTMEM_DEVICE_H_
#define HOTMEM_NATIVE_HOTMEM_DEVICE_H_

#include <napi.h>

#include <string>

namespace hotmem {

class DeviceEvents;

class HotMemDevice : public Napi::ObjectWrap<HotMemDevice> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);

  explicit HotMemDevice(const Napi::CallbackInfo& info);
  ~HotMemDevice() override;

 private:
  Napi::Value Version(const Napi::CallbackInfo& info);
  Napi::Value PartitionInfo(const Napi::CallbackInfo& info);
  Napi::Value Bind(const Napi::CallbackInfo& info);
  void SetFlags(const Napi::CallbackInfo& info);
  Napi::Value Reclaim(const Napi::CallbackInfo& info);
  void WatchEvents(const Napi::CallbackInfo& info);
  void UnwatchEvents(const Napi::CallbackInfo& info);
  void Ref(const Napi::CallbackInfo& info);
  void Unref(const Napi::CallbackInfo& info);
  void Close(const Napi::CallbackInfo& info);
  Napi::Value Path(const Napi::CallbackInfo& info);

  // Throws once close() has been called; returns the open fd otherwise.
  int OpenFd(Napi::Env env, const char* operation) const;
  // A quick ioctl on the JS thread; throws the Node-style error naming the request.
  void Ioctl(Napi::Env env, const char* operation, unsigned long request, const char* request_name,
             void* arg) const;
  // A private duplicate for a thread-pool worker, so close() never pulls the fd from under it.
  int DupFd(Napi::Env env, const char* operation) const;
  void StopEvents();

  std::string path_;
  int fd_ = -1;
  DeviceEvents* events_ = nullptr;
  bool referenced_ = true;
};

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_HOTMEM_DEVICE_H_
