// Process primitives the agent needs and Node lacks: pidfds, the child-subreaper flag, and reaping
// orphans reparented to us without stealing the children libuv waits for.
#ifndef HOTMEM_NATIVE_PROCESS_H_
#define HOTMEM_NATIVE_PROCESS_H_

#include <napi.h>

namespace hotmem {

void InitProcess(Napi::Env env, Napi::Object exports);

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_PROCESS_H_
