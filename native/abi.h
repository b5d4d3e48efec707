// The view of <linux/hotmem.h> this addon was compiled with, exported so the TypeScript side takes
// its constants from one place and a unit test can compare it with the header as it is now.
#ifndef HOTMEM_NATIVE_ABI_H_
#define HOTMEM_NATIVE_ABI_H_

#include <napi.h>

namespace hotmem {

void InitAbi(Napi::Env env, Napi::Object exports);

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_ABI_H_
