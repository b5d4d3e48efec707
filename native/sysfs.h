// Small-file I/O for sysfs attributes. Every path is absolute and already carries the root prefix,
// so unit tests can point the addon at a tree laid out in a temp dir.
#ifndef HOTMEM_NATIVE_SYSFS_H_
#define HOTMEM_NATIVE_SYSFS_H_

#include <napi.h>

#include <string>

#include "errors.h"

namespace hotmem {

// Reads a whole attribute; false with *failure filled on error. Safe on any thread.
bool ReadAttribute(const std::string& path, std::string* contents, SystemFailure* failure);
// Writes value in one write(2), as sysfs store() callbacks expect; a short write is an error.
bool WriteAttribute(const std::string& path, const std::string& value, SystemFailure* failure);
// The attribute without the trailing newline sysfs adds.
std::string TrimNewline(std::string text);

void InitSysfs(Napi::Env env, Napi::Object exports);

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_SYSFS_H_
