#include "memory_blocks.h"

#include <dirent.h>
#include <errno.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "promise_worker.h"
#include "sysfs.h"

namespace hotmem {

namespace {

struct BlockRecord {
  uint32_t id = 0;
  std::string state;
  std::vector<std::string> valid_zones;
  int32_t node = -1;  // -1: no nodeN link (kernel without NUMA sysfs links)
  uint64_t phys_index = 0;
};

// Parses "memoryN" / "nodeN"; false for any other name.
bool ParseNumberedName(const char* name, const char* prefix, uint32_t* number) {
  size_t prefix_len = std::char_traits<char>::length(prefix);
  if (std::char_traits<char>::compare(name, prefix, prefix_len) != 0) return false;
  const char* digits = name + prefix_len;
  if (*digits < '0' || *digits > '9') return false;
  char* end = nullptr;
  errno = 0;
  unsigned long value = std::strtoul(digits, &end, 10);
  if (*end != '\0' || errno != 0 || value > UINT32_MAX) return false;
  *number = static_cast<uint32_t>(value);
  return true;
}

bool ParseHex(const std::string& text, uint64_t* value) {
  std::string trimmed = TrimNewline(text);
  if (trimmed.rfind("0x", 0) == 0) trimmed.erase(0, 2);
  if (trimmed.empty() || trimmed.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    return false;
  }
  errno = 0;
  unsigned long long parsed = std::strtoull(trimmed.c_str(), nullptr, 16);
  if (errno != 0) return false;
  *value = parsed;
  return true;
}

bool ReadBlock(const std::string& dir, uint32_t id, BlockRecord* block, SystemFailure* failure) {
  std::string block_dir = dir + "/memory" + std::to_string(id);
  block->id = id;
  std::string text;
  if (!ReadAttribute(block_dir + "/state", &text, failure)) return false;
  block->state = TrimNewline(text);

  // valid_zones exists only with CONFIG_MEMORY_HOTREMOVE; without it no zone is known.
  SystemFailure zones_failure;
  if (ReadAttribute(block_dir + "/valid_zones", &text, &zones_failure)) {
    std::istringstream zones(TrimNewline(text));
    std::string zone;
    while (zones >> zone) block->valid_zones.push_back(zone);
  } else if (zones_failure.errnum != ENOENT) {
    *failure = zones_failure;
    return false;
  }

  if (!ReadAttribute(block_dir + "/phys_index", &text, failure)) return false;
  if (!ParseHex(text, &block->phys_index)) {
    failure->Set(EINVAL, "read", block_dir + "/phys_index");
    return false;
  }

  DIR* entries = opendir(block_dir.c_str());
  if (entries == nullptr) {
    failure->Set(errno, "opendir", block_dir);
    return false;
  }
  while (struct dirent* entry = readdir(entries)) {
    uint32_t node;
    if (ParseNumberedName(entry->d_name, "node", &node)) {
      block->node = static_cast<int32_t>(node);
      break;
    }
  }
  closedir(entries);
  return true;
}

Napi::Object BlockToObject(Napi::Env env, const BlockRecord& block) {
  Napi::Object object = Napi::Object::New(env);
  object.Set("id", Napi::Number::New(env, block.id));
  object.Set("state", Napi::String::New(env, block.state));
  Napi::Array zones = Napi::Array::New(env, block.valid_zones.size());
  for (uint32_t i = 0; i < block.valid_zones.size(); i++) {
    zones.Set(i, Napi::String::New(env, block.valid_zones[i]));
  }
  object.Set("validZones", zones);
  object.Set("node", Napi::Number::New(env, block.node));
  object.Set("physIndex", Napi::BigInt::New(env, block.phys_index));
  return object;
}

class ListWorker : public PromiseWorker {
 public:
  ListWorker(Napi::Env env, std::string dir)
      : PromiseWorker(env, "hotmem:listMemoryBlocks"), dir_(std::move(dir)) {}

 private:
  void Execute() override {
    std::vector<uint32_t> ids;
    DIR* entries = opendir(dir_.c_str());
    if (entries == nullptr) {
      failure_.Set(errno, "opendir", dir_);
      return;
    }
    while (struct dirent* entry = readdir(entries)) {
      uint32_t id;
      if (ParseNumberedName(entry->d_name, "memory", &id)) ids.push_back(id);
    }
    closedir(entries);
    std::sort(ids.begin(), ids.end());
    for (uint32_t id : ids) {
      BlockRecord block;
      if (!ReadBlock(dir_, id, &block, &failure_)) {
        // A block removed (unplugged) while listing is not an error: it is simply gone.
        if (failure_.errnum == ENOENT) {
          failure_ = SystemFailure();
          continue;
        }
        return;
      }
      blocks_.push_back(std::move(block));
    }
  }

  Napi::Value Resolve(Napi::Env env) override {
    Napi::Array array = Napi::Array::New(env, blocks_.size());
    for (uint32_t i = 0; i < blocks_.size(); i++) array.Set(i, BlockToObject(env, blocks_[i]));
    return array;
  }

  std::string dir_;
  std::vector<BlockRecord> blocks_;
};

class ReadWorker : public PromiseWorker {
 public:
  ReadWorker(Napi::Env env, std::string dir, uint32_t id)
      : PromiseWorker(env, "hotmem:readMemoryBlock"), dir_(std::move(dir)), id_(id) {}

 private:
  void Execute() override { ReadBlock(dir_, id_, &block_, &failure_); }
  Napi::Value Resolve(Napi::Env env) override { return BlockToObject(env, block_); }

  std::string dir_;
  uint32_t id_;
  BlockRecord block_;
};

// listMemoryBlocks(dir): Promise<RawMemoryBlock[]>, sorted by id.
Napi::Value ListMemoryBlocks(const Napi::CallbackInfo& info) {
  std::string dir = ArgString(info, 0, "dir");
  return (new ListWorker(info.Env(), std::move(dir)))->Start();
}

// readMemoryBlock(dir, id): Promise<RawMemoryBlock>.
Napi::Value ReadMemoryBlock(const Napi::CallbackInfo& info) {
  std::string dir = ArgString(info, 0, "dir");
  uint32_t id = ArgUint32(info, 1, "id");
  return (new ReadWorker(info.Env(), std::move(dir), id))->Start();
}

// memoryBlockSize(dir): number, from block_size_bytes (hex without 0x, e.g. 8000000 = 128 MiB).
Napi::Value MemoryBlockSize(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "dir") + "/block_size_bytes";
  std::string text;
  SystemFailure failure;
  if (!ReadAttribute(path, &text, &failure)) throw ErrnoError(info.Env(), failure);
  uint64_t size;
  if (!ParseHex(text, &size) || size == 0) {
    throw Napi::Error::New(info.Env(), "unparsable block size '" + TrimNewline(text) + "' in " +
                                           path + " (expected hex bytes, e.g. 8000000)");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(size));
}

}  // namespace

void InitMemoryBlocks(Napi::Env env, Napi::Object exports) {
  exports.Set("listMemoryBlocks", Napi::Function::New(env, ListMemoryBlocks, "listMemoryBlocks"));
  exports.Set("readMemoryBlock", Napi::Function::New(env, ReadMemoryBlock, "readMemoryBlock"));
  exports.Set("memoryBlockSize", Napi::Function::New(env, MemoryBlockSize, "memoryBlockSize"));
}

}  // namespace hotmem
