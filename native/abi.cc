#include "abi.h"

#include <linux/hotmem.h>

#include <cstddef>

namespace hotmem {

namespace {

void SetNumber(Napi::Object object, const char* name, double value) {
  object.Set(name, Napi::Number::New(object.Env(), value));
}

}  // namespace

#define HOTMEM_FIELD(object, type, field) SetNumber(object, #field, offsetof(struct type, field))

void InitAbi(Napi::Env env, Napi::Object exports) {
  Napi::Object abi = Napi::Object::New(env);
  SetNumber(abi, "HOTMEM_ABI_VERSION", HOTMEM_ABI_VERSION);

  Napi::Object constants = Napi::Object::New(env);
  SetNumber(constants, "HOTMEM_PARTITION_EMPTY", HOTMEM_PARTITION_EMPTY);
  SetNumber(constants, "HOTMEM_PARTITION_FREE", HOTMEM_PARTITION_FREE);
  SetNumber(constants, "HOTMEM_PARTITION_BOUND", HOTMEM_PARTITION_BOUND);
  SetNumber(constants, "HOTMEM_PARTITION_RECLAIMING", HOTMEM_PARTITION_RECLAIMING);
  SetNumber(constants, "HOTMEM_PARTITION_SPILL", HOTMEM_PARTITION_SPILL);
  SetNumber(constants, "HOTMEM_PARTITION_AUTO_RECLAIM", HOTMEM_PARTITION_AUTO_RECLAIM);
  SetNumber(constants, "HOTMEM_BIND_WAIT", HOTMEM_BIND_WAIT);
  SetNumber(constants, "HOTMEM_EVENT_RELEASED", HOTMEM_EVENT_RELEASED);
  SetNumber(constants, "HOTMEM_EVENT_RECLAIMED", HOTMEM_EVENT_RECLAIMED);
  SetNumber(constants, "HOTMEM_EVENT_OOM", HOTMEM_EVENT_OOM);
  SetNumber(constants, "HOTMEM_EVENT_OVERFLOW", HOTMEM_EVENT_OVERFLOW);
  SetNumber(constants, "HOTMEM_IOC_MAGIC", HOTMEM_IOC_MAGIC);
  SetNumber(constants, "HOTMEM_IOC_VERSION", HOTMEM_IOC_VERSION);
  SetNumber(constants, "HOTMEM_IOC_PARTITION_INFO", HOTMEM_IOC_PARTITION_INFO);
  SetNumber(constants, "HOTMEM_IOC_BIND", HOTMEM_IOC_BIND);
  SetNumber(constants, "HOTMEM_IOC_SET_FLAGS", HOTMEM_IOC_SET_FLAGS);
  SetNumber(constants, "HOTMEM_IOC_RECLAIM", HOTMEM_IOC_RECLAIM);
  abi.Set("constants", constants);

  // { struct name: { sizeof, fields: { field: offsetof } } }
  Napi::Object structs = Napi::Object::New(env);
  auto add_struct = [&](const char* name, size_t size) {
    Napi::Object layout = Napi::Object::New(env);
    SetNumber(layout, "sizeof", size);
    Napi::Object fields = Napi::Object::New(env);
    layout.Set("fields", fields);
    structs.Set(name, layout);
    return fields;
  };

  Napi::Object f = add_struct("hotmem_version", sizeof(struct hotmem_version));
  HOTMEM_FIELD(f, hotmem_version, size);
  HOTMEM_FIELD(f, hotmem_version, abi_version);
  HOTMEM_FIELD(f, hotmem_version, max_partitions);
  HOTMEM_FIELD(f, hotmem_version, nr_partitions);

  f = add_struct("hotmem_partition_info", sizeof(struct hotmem_partition_info));
  HOTMEM_FIELD(f, hotmem_partition_info, size);
  HOTMEM_FIELD(f, hotmem_partition_info, partition);
  HOTMEM_FIELD(f, hotmem_partition_info, state);
  HOTMEM_FIELD(f, hotmem_partition_info, flags);
  HOTMEM_FIELD(f, hotmem_partition_info, nr_blocks);
  HOTMEM_FIELD(f, hotmem_partition_info, node);
  HOTMEM_FIELD(f, hotmem_partition_info, present_bytes);
  HOTMEM_FIELD(f, hotmem_partition_info, free_bytes);
  HOTMEM_FIELD(f, hotmem_partition_info, bound_mms);
  HOTMEM_FIELD(f, hotmem_partition_info, spilled_pages);
  HOTMEM_FIELD(f, hotmem_partition_info, oom_kills);

  f = add_struct("hotmem_bind", sizeof(struct hotmem_bind));
  HOTMEM_FIELD(f, hotmem_bind, size);
  HOTMEM_FIELD(f, hotmem_bind, pidfd);
  HOTMEM_FIELD(f, hotmem_bind, partition);
  HOTMEM_FIELD(f, hotmem_bind, flags);
  HOTMEM_FIELD(f, hotmem_bind, timeout_ns);

  f = add_struct("hotmem_partition_flags", sizeof(struct hotmem_partition_flags));
  HOTMEM_FIELD(f, hotmem_partition_flags, size);
  HOTMEM_FIELD(f, hotmem_partition_flags, partition);
  HOTMEM_FIELD(f, hotmem_partition_flags, flags);
  HOTMEM_FIELD(f, hotmem_partition_flags, __reserved);

  f = add_struct("hotmem_reclaim", sizeof(struct hotmem_reclaim));
  HOTMEM_FIELD(f, hotmem_reclaim, size);
  HOTMEM_FIELD(f, hotmem_reclaim, partition);
  HOTMEM_FIELD(f, hotmem_reclaim, flags);
  HOTMEM_FIELD(f, hotmem_reclaim, nr_blocks);
  HOTMEM_FIELD(f, hotmem_reclaim, bytes);
  HOTMEM_FIELD(f, hotmem_reclaim, duration_ns);
  HOTMEM_FIELD(f, hotmem_reclaim, pages_migrated);
  HOTMEM_FIELD(f, hotmem_reclaim, busy_pfn);

  f = add_struct("hotmem_event", sizeof(struct hotmem_event));
  HOTMEM_FIELD(f, hotmem_event, size);
  HOTMEM_FIELD(f, hotmem_event, type);
  HOTMEM_FIELD(f, hotmem_event, partition);
  HOTMEM_FIELD(f, hotmem_event, __reserved);
  HOTMEM_FIELD(f, hotmem_event, seq);
  HOTMEM_FIELD(f, hotmem_event, timestamp_ns);
  HOTMEM_FIELD(f, hotmem_event, data);

  abi.Set("structs", structs);
  exports.Set("abi", abi);
}

#undef HOTMEM_FIELD

}  // namespace hotmem
