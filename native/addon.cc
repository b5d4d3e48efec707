// Registers the addon's exports; each concern lives in its own file.
#include <napi.h>

#include "abi.h"
#include "hotmem_device.h"
#include "memory_blocks.h"
#include "process.h"
#include "sysfs.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  hotmem::InitAbi(env, exports);
  hotmem::InitSysfs(env, exports);
  hotmem::InitMemoryBlocks(env, exports);
  hotmem::HotMemDevice::Init(env, exports);
  hotmem::InitProcess(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(hotmem, Init)
