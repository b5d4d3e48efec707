/**
 * The public API of the hotmem package. Nothing here loads the native addon: that happens on the
 * first call that needs the kernel.
 */
export {
  Agent,
  type AgentEvent,
  type AgentHealth,
  type AgentOptions,
  type AgentPartition,
  type MemorySummary,
  type Reaper,
} from './agent/agent.js';
export { AgentClient, AgentRequestError } from './agent/client.js';
export { AGENT_ERRORS, AgentError, type AgentErrorCode } from './agent/errors.js';
export { type RunAgentOptions, runAgent } from './agent/run.js';
export { type CreateInstanceRequest, LIMITS as AGENT_LIMITS } from './agent/schemas.js';
export { AgentServer, type AgentServerOptions, type Endpoint } from './agent/server.js';
export { launcherPath, relayPath } from './binding.js';
export { type CgroupLimits, CgroupTree, InstanceCgroup } from './cgroup.js';
export { HotMemError, type HotMemErrorCode, isErrnoError } from './errors.js';
export {
  CloudHypervisorApiError,
  CloudHypervisorClient,
  CloudHypervisorHotplugMemory,
  CloudHypervisorTimeoutError,
  type VmCounters,
  type VmInfo,
  type VmmPing,
} from './host/vmm/cloud-hypervisor.js';
export {
  FirecrackerApiError,
  FirecrackerClient,
  FirecrackerHotplugMemory,
  FirecrackerTimeoutError,
  type MemoryHotplugConfig,
  type MemoryHotplugStatus,
} from './host/vmm/firecracker.js';
export {
  HOTPLUG_MEMORY_ERRORS,
  type HotplugMemory,
  HotplugMemoryError,
  type HotplugMemoryErrorCode,
} from './host/vmm/hotplug-memory.js';
export {
  QmpClient,
  QmpCommandError,
  QmpConnectionError,
  VirtioMemDevice,
} from './host/vmm/qemu.js';
export {
  HotMemDevice,
  type HotMemEvent,
  type HotMemEventType,
  HotMemSysfs,
  type PartitionInfo,
  type PartitionState,
  type ReclaimReport,
} from './hotmem-device.js';
export { CleanupStack } from './instance/cleanup-stack.js';
export {
  Instance,
  type InstanceEnvironment,
  type InstanceExit,
  type InstanceSpec,
  type InstanceSummary,
  type Launcher,
  type Pidfds,
  SpawnError,
} from './instance/instance.js';
export { OutputRing } from './instance/output-ring.js';
export { createLogger, type Logger, type LoggerOptions } from './log.js';
export { type MemoryBlock, MemoryBlocks, type OnlineTarget } from './memory-blocks.js';
export {
  type Acquired,
  type ManagerStatus,
  PartitionManager,
  type PartitionManagerApi,
  type PartitionManagerEvents,
  type PartitionManagerOptions,
} from './partition-manager.js';
export {
  closeFd,
  pidfdOpen,
  pidfdSendSignal,
  type ReapedProcess,
  reapOrphans,
  setChildSubreaper,
} from './process.js';
