// Memory blocks under /sys/devices/system/memory (Documentation/admin-guide/mm/memory-hotplug.rst).
#ifndef HOTMEM_NATIVE_MEMORY_BLOCKS_H_
#define HOTMEM_NATIVE_MEMORY_BLOCKS_H_

#include <napi.h>

namespace hotmem {

void InitMemoryBlocks(Napi::Env env, Napi::Object exports);

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_MEMORY_BLOCKS_H_
