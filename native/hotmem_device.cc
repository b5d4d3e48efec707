#include "hotmem_device.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/hotmem.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdint>

#include "bind.h"
#include "device_events.h"
#include "promise_worker.h"

namespace hotmem {

namespace {

int RetryIoctl(int fd, unsigned long request, void* arg) {
  int ret;
  do {
    ret = ioctl(fd, request, arg);
  } while (ret < 0 && errno == EINTR);
  return ret;
}

// The error of a failed ioctl, naming the request so "ENOTTY ... ioctl '/dev/hotmem'" says which.
Napi::Error IoctlError(Napi::Env env, int errnum, const std::string& path, const char* request) {
  Napi::Error error = ErrnoError(env, errnum, "ioctl", path);
  error.Set("request", Napi::String::New(env, request));
  return error;
}

Napi::BigInt U64(Napi::Env env, __u64 value) {
  return Napi::BigInt::New(env, static_cast<uint64_t>(value));
}

class BindWorker : public PromiseWorker {
 public:
  BindWorker(Napi::Env env, int fd, std::string path, int pidfd, uint32_t partition,
             int32_t wait_ms)
      : PromiseWorker(env, "hotmem:bind"),
        fd_(fd),
        path_(std::move(path)),
        pidfd_(pidfd),
        partition_(partition),
        wait_ms_(wait_ms) {}
  ~BindWorker() override { close(fd_); }

 private:
  void Execute() override {
    if (BindToPartition(fd_, pidfd_, partition_, wait_ms_) < 0) {
      failure_.Set(errno, "ioctl", path_);
    }
  }
  void Decorate(Napi::Error& error) override {
    error.Set("request", Napi::String::New(Env(), "HOTMEM_IOC_BIND"));
  }

  int fd_;
  std::string path_;
  int pidfd_;
  uint32_t partition_;
  int32_t wait_ms_;
};

class ReclaimWorker : public PromiseWorker {
 public:
  ReclaimWorker(Napi::Env env, int fd, std::string path, uint32_t partition)
      : PromiseWorker(env, "hotmem:reclaim"), fd_(fd), path_(std::move(path)), reclaim_() {
    reclaim_.size = sizeof(reclaim_);
    reclaim_.partition = partition;
  }
  ~ReclaimWorker() override { close(fd_); }

 private:
  void Execute() override {
    if (RetryIoctl(fd_, HOTMEM_IOC_RECLAIM, &reclaim_) < 0) failure_.Set(errno, "ioctl", path_);
  }
  void Decorate(Napi::Error& error) override {
    error.Set("request", Napi::String::New(Env(), "HOTMEM_IOC_RECLAIM"));
    // The kernel names the first page that kept the partition from going offline.
    if (failure_.errnum == EBUSY) error.Set("busyPfn", U64(Env(), reclaim_.busy_pfn));
  }
  Napi::Value Resolve(Napi::Env env) override {
    Napi::Object report = Napi::Object::New(env);
    report.Set("partition", Napi::Number::New(env, reclaim_.partition));
    report.Set("blocks", Napi::Number::New(env, reclaim_.nr_blocks));
    report.Set("bytes", U64(env, reclaim_.bytes));
    report.Set("durationNs", U64(env, reclaim_.duration_ns));
    report.Set("pagesMigrated", U64(env, reclaim_.pages_migrated));
    return report;
  }

  int fd_;
  std::string path_;
  struct hotmem_reclaim reclaim_;
};

}  // namespace

void HotMemDevice::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function constructor = DefineClass(
      env, "HotMemDevice",
      {
          InstanceMethod<&HotMemDevice::Version>("version"),
          InstanceMethod<&HotMemDevice::PartitionInfo>("partitionInfo"),
          InstanceMethod<&HotMemDevice::Bind>("bind"),
          InstanceMethod<&HotMemDevice::SetFlags>("setFlags"),
          InstanceMethod<&HotMemDevice::Reclaim>("reclaim"),
          InstanceMethod<&HotMemDevice::WatchEvents>("watchEvents"),
          InstanceMethod<&HotMemDevice::UnwatchEvents>("unwatchEvents"),
          InstanceMethod<&HotMemDevice::Ref>("ref"),
          InstanceMethod<&HotMemDevice::Unref>("unref"),
          InstanceMethod<&HotMemDevice::Close>("close"),
          InstanceAccessor<&HotMemDevice::Path>("path"),
      });
  exports.Set("HotMemDevice", constructor);
}

// new HotMemDevice(path): opens the device read-write; throws the open error (ENOENT when the
// kernel has no HotMem, EACCES without CAP_SYS_ADMIN).
HotMemDevice::HotMemDevice(const Napi::CallbackInfo& info) : Napi::ObjectWrap<HotMemDevice>(info) {
  path_ = ArgString(info, 0, "path");
  fd_ = open(path_.c_str(), O_RDWR | O_CLOEXEC);
  if (fd_ < 0) throw ErrnoError(info.Env(), errno, "open", path_);
}

HotMemDevice::~HotMemDevice() {
  StopEvents();
  if (fd_ >= 0) close(fd_);
}

int HotMemDevice::OpenFd(Napi::Env env, const char* operation) const {
  if (fd_ < 0) {
    throw Napi::Error::New(env, std::string(operation) + ": " + path_ + " is closed");
  }
  return fd_;
}

void HotMemDevice::Ioctl(Napi::Env env, const char* operation, unsigned long request,
                         const char* request_name, void* arg) const {
  if (RetryIoctl(OpenFd(env, operation), request, arg) < 0) {
    throw IoctlError(env, errno, path_, request_name);
  }
}

int HotMemDevice::DupFd(Napi::Env env, const char* operation) const {
  int fd = fcntl(OpenFd(env, operation), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, errno, "fcntl", path_);
  return fd;
}

// version(): { abiVersion, maxPartitions, nrPartitions }
Napi::Value HotMemDevice::Version(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct hotmem_version version = {};
  version.size = sizeof(version);
  Ioctl(env, "version", HOTMEM_IOC_VERSION, "HOTMEM_IOC_VERSION", &version);
  Napi::Object result = Napi::Object::New(env);
  result.Set("abiVersion", Napi::Number::New(env, version.abi_version));
  result.Set("maxPartitions", Napi::Number::New(env, version.max_partitions));
  result.Set("nrPartitions", Napi::Number::New(env, version.nr_partitions));
  return result;
}

// partitionInfo(partition): the raw struct hotmem_partition_info, u64 fields as BigInt.
Napi::Value HotMemDevice::PartitionInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct hotmem_partition_info partition = {};
  partition.size = sizeof(partition);
  partition.partition = ArgUint32(info, 0, "partition");
  Ioctl(env, "partitionInfo", HOTMEM_IOC_PARTITION_INFO, "HOTMEM_IOC_PARTITION_INFO", &partition);
  Napi::Object result = Napi::Object::New(env);
  result.Set("id", Napi::Number::New(env, partition.partition));
  result.Set("state", Napi::Number::New(env, partition.state));
  result.Set("flags", Napi::Number::New(env, partition.flags));
  result.Set("nrBlocks", Napi::Number::New(env, partition.nr_blocks));
  result.Set("node", Napi::Number::New(env, partition.node));
  result.Set("presentBytes", U64(env, partition.present_bytes));
  result.Set("freeBytes", U64(env, partition.free_bytes));
  result.Set("boundMms", U64(env, partition.bound_mms));
  result.Set("spilledPages", U64(env, partition.spilled_pages));
  result.Set("oomKills", U64(env, partition.oom_kills));
  return result;
}

// bind(pidfd, partition, waitMs): Promise<void>. waitMs < 0: fail at once if the partition is
// unpopulated; waitMs >= 0: HOTMEM_BIND_WAIT with that timeout (0 waits forever, as the uapi says).
Napi::Value HotMemDevice::Bind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t pidfd = ArgInt32(info, 0, "pidfd");
  uint32_t partition = ArgUint32(info, 1, "partition");
  int32_t wait_ms = ArgInt32(info, 2, "waitMs");
  int fd = DupFd(env, "bind");
  return (new BindWorker(env, fd, path_, pidfd, partition, wait_ms))->Start();
}

// setFlags(partition, flags): replaces the partition's HOTMEM_PARTITION_* set.
void HotMemDevice::SetFlags(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct hotmem_partition_flags flags = {};
  flags.size = sizeof(flags);
  flags.partition = ArgUint32(info, 0, "partition");
  flags.flags = ArgUint32(info, 1, "flags");
  Ioctl(env, "setFlags", HOTMEM_IOC_SET_FLAGS, "HOTMEM_IOC_SET_FLAGS", &flags);
}

// reclaim(partition): Promise<{ partition, blocks, bytes, durationNs, pagesMigrated }>.
Napi::Value HotMemDevice::Reclaim(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t partition = ArgUint32(info, 0, "partition");
  int fd = DupFd(env, "reclaim");
  return (new ReclaimWorker(env, fd, path_, partition))->Start();
}

// watchEvents(callback(error, records)): starts delivering event records; one watch at a time.
void HotMemDevice::WatchEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OpenFd(env, "watchEvents");
  if (info.Length() < 1 || !info[0].IsFunction()) {
    throw Napi::TypeError::New(env, "argument 'callback' must be a function");
  }
  if (events_ != nullptr) throw Napi::Error::New(env, "watchEvents: already watching " + path_);
  DeviceEvents::Start(env, path_, info[0].As<Napi::Function>(), referenced_, &events_);
}

void HotMemDevice::UnwatchEvents(const Napi::CallbackInfo& /*info*/) { StopEvents(); }

void HotMemDevice::StopEvents() {
  if (events_ != nullptr) events_->Stop();  // nulls events_
}

void HotMemDevice::Ref(const Napi::CallbackInfo& /*info*/) {
  referenced_ = true;
  if (events_ != nullptr) events_->SetReferenced(true);
}

void HotMemDevice::Unref(const Napi::CallbackInfo& /*info*/) {
  referenced_ = false;
  if (events_ != nullptr) events_->SetReferenced(false);
}

void HotMemDevice::Close(const Napi::CallbackInfo& /*info*/) {
  StopEvents();
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

Napi::Value HotMemDevice::Path(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), path_);
}

}  // namespace hotmem
