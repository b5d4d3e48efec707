#include "errors.h"

#include <uv.h>

#include <cctype>
#include <cmath>
#include <cstring>

namespace hotmem {

Napi::Error ErrnoError(Napi::Env env, int errnum, const std::string& syscall,
                       const std::string& path) {
  // libuv names errors the way Node does (UV_EBUSY == -EBUSY on Linux).
  char code[64];
  uv_err_name_r(-errnum, code, sizeof(code));
  std::string description = std::strerror(errnum);
  if (!description.empty()) {
    description[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(description[0])));
  }
  std::string message = std::string(code) + ": " + description + ", " + syscall;
  if (!path.empty()) {
    message += " '" + path + "'";
  }
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("errno", Napi::Number::New(env, -errnum));
  error.Set("code", Napi::String::New(env, code));
  error.Set("syscall", Napi::String::New(env, syscall));
  if (!path.empty()) {
    error.Set("path", Napi::String::New(env, path));
  }
  return error;
}

Napi::Error ErrnoError(Napi::Env env, const SystemFailure& failure) {
  return ErrnoError(env, failure.errnum, failure.syscall, failure.path);
}

namespace {

Napi::Value Arg(const Napi::CallbackInfo& info, size_t index, const char* name,
                const char* expected) {
  if (index >= info.Length() || info[index].IsUndefined()) {
    throw Napi::TypeError::New(info.Env(), std::string("missing argument '") + name + "' (" +
                                               expected + ")");
  }
  return info[index];
}

double ArgInteger(const Napi::CallbackInfo& info, size_t index, const char* name, double min,
                  double max, const char* expected) {
  Napi::Value value = Arg(info, index, name, expected);
  double number = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(number) || std::trunc(number) != number || number < min || number > max) {
    throw Napi::TypeError::New(info.Env(),
                               std::string("argument '") + name + "' must be " + expected);
  }
  return number;
}

}  // namespace

uint32_t ArgUint32(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return static_cast<uint32_t>(
      ArgInteger(info, index, name, 0, 4294967295.0, "an integer in [0, 2^32)"));
}

int32_t ArgInt32(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return static_cast<int32_t>(
      ArgInteger(info, index, name, -2147483648.0, 2147483647.0, "a 32-bit integer"));
}

std::string ArgString(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = Arg(info, index, name, "a string");
  if (!value.IsString()) {
    throw Napi::TypeError::New(info.Env(), std::string("argument '") + name + "' must be a string");
  }
  return value.As<Napi::String>().Utf8Value();
}

}  // namespace hotmem
