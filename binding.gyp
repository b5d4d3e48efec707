{
  # The addon and the launcher include <linux/hotmem.h> from kernel-patches/uapi: the one copy of the
  # kernel ABI, added byte-identical by the kernel series (test/unit/native/uapi-drift.test.ts checks both).
  'target_defaults': {
    'cflags!': ['-fno-exceptions'],
    'cflags_cc!': ['-fno-exceptions', '-std=gnu++17', '-std=gnu++20'],
    'cflags': ['-Wall', '-Wextra', '-fstack-protector-strong'],
    'cflags_cc': ['-std=c++17', '-Wall', '-Wextra', '-fstack-protector-strong'],
    'include_dirs': ['kernel-patches/uapi'],
  },
  'targets': [
    {
      'target_name': 'hotmem',
      'dependencies': ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      'defines': ['NAPI_VERSION=8', 'NODE_ADDON_API_DISABLE_DEPRECATED'],
      'conditions': [
        ['OS=="linux"', {
          'sources': [
            'native/addon.cc',
            'native/abi.cc',
            'native/errors.cc',
            'native/sysfs.cc',
            'native/memory_blocks.cc',
            'native/bind.cc',
            'native/hotmem_device.cc',
            'native/device_events.cc',
            'native/process.cc',
          ],
        }],
      ],
    },
    {
      'target_name': 'hotmem-exec',
      'type': 'executable',
      'conditions': [
        ['OS=="linux"', {
          'sources': ['native/hotmem_exec.cc', 'native/bind.cc', 'native/join_cgroup.cc'],
        }],
      ],
    },
    {
      'target_name': 'hotmem-relay',
      'type': 'executable',
      'conditions': [
        ['OS=="linux"', {
          'sources': ['native/hotmem_relay.cc', 'native/output_relay.cc', 'native/join_cgroup.cc'],
        }],
      ],
    },
  ],
}
