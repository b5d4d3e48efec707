// Errors shaped like Node's own system errors (src/api/exceptions.cc): an Error whose message is
// "EBUSY: device or resource busy, write '/sys/...'" carrying errno (negative), code, syscall and
// path. Worker threads cannot touch JS, so they record a SystemFailure that the JS thread turns
// into an Error afterwards.
#ifndef HOTMEM_NATIVE_ERRORS_H_
#define HOTMEM_NATIVE_ERRORS_H_

#include <napi.h>

#include <string>

namespace hotmem {

struct SystemFailure {
  int errnum = 0;  // positive errno; 0 = no failure
  std::string syscall;
  std::string path;

  explicit operator bool() const { return errnum != 0; }
  void Set(int err, const char* call, const std::string& where) {
    errnum = err;
    syscall = call;
    path = where;
  }
};

Napi::Error ErrnoError(Napi::Env env, int errnum, const std::string& syscall,
                       const std::string& path);
Napi::Error ErrnoError(Napi::Env env, const SystemFailure& failure);

// Argument checks shared by every exported function; each throws a TypeError naming the argument.
uint32_t ArgUint32(const Napi::CallbackInfo& info, size_t index, const char* name);
int32_t ArgInt32(const Napi::CallbackInfo& info, size_t index, const char* name);
std::string ArgString(const Napi::CallbackInfo& info, size_t index, const char* name);

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_ERRORS_H_
