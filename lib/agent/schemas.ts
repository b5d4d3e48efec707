/**
 * Request validation at the API edge. Every size and count is bounded; a command is an argv
 * array executed without a shell.
 */
import { z } from 'zod';
import { CPU_WEIGHT_MAX, CPU_WEIGHT_MIN } from '../cgroup.js';
import { AgentError } from './errors.js';

export const LIMITS = {
  bodyBytes: 256 * 1024,
  commandArgs: 256,
  argChars: 4_096,
  envEntries: 256,
  envNameChars: 256,
  envValueChars: 32 * 1024,
  pathChars: 4_096,
  memoryBytesMin: 4 * 2 ** 20,
  memoryBytesMax: 2 ** 40,
  graceMsMax: 10 * 60 * 1000,
  invokeTimeoutMsMax: 10 * 60 * 1000,
  bindingNameChars: 128,
  /** The kernel's PID_MAX_LIMIT on 64-bit. */
  pidMax: 4 * 1024 * 1024,
} as const;

export const DEFAULT_INVOKE_TIMEOUT_MS = 30_000;

const noNul = (value: string) => !value.includes('\0');

const memoryBytesSchema = z
  .number()
  .int()
  .min(LIMITS.memoryBytesMin, `at least ${LIMITS.memoryBytesMin} (4 MiB)`)
  .max(LIMITS.memoryBytesMax, `at most ${LIMITS.memoryBytesMax} (1 TiB)`);

const argument = z
  .string()
  .max(LIMITS.argChars, `at most ${LIMITS.argChars} characters`)
  .refine(noNul, 'must not contain NUL');

export const createInstanceSchema = z
  .object({
    command: z
      .array(argument)
      .min(1, 'at least the program is needed')
      .max(LIMITS.commandArgs, `at most ${LIMITS.commandArgs} arguments`)
      .refine((argv) => (argv[0] ?? '').length > 0, 'the program must not be empty'),
    env: z
      .record(
        z
          .string()
          .max(LIMITS.envNameChars)
          .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'names are [A-Za-z_][A-Za-z0-9_]*'),
        z.string().max(LIMITS.envValueChars).refine(noNul, 'must not contain NUL'),
      )
      .refine(
        (env) => Object.keys(env).length <= LIMITS.envEntries,
        `at most ${LIMITS.envEntries} variables`,
      )
      .optional(),
    cwd: z
      .string()
      .max(LIMITS.pathChars)
      .refine((value) => value.startsWith('/'), 'must be an absolute path')
      .refine(noNul, 'must not contain NUL')
      .optional(),
    memoryBytes: memoryBytesSchema,
    cpuWeight: z.number().int().min(CPU_WEIGHT_MIN).max(CPU_WEIGHT_MAX).optional(),
    port: z.number().int().min(1).max(65535).optional(),
  })
  .strict();

export type CreateInstanceRequest = z.infer<typeof createInstanceSchema>;

export const stopInstanceSchema = z
  .object({ graceMs: z.number().int().min(0).max(LIMITS.graceMsMax).optional() })
  .strict();

export type StopInstanceRequest = z.infer<typeof stopInstanceSchema>;

export const invokeSchema = z
  .object({
    payload: z.unknown().optional(),
    timeoutMs: z
      .number()
      .int()
      .min(1)
      .max(LIMITS.invokeTimeoutMsMax, `at most ${LIMITS.invokeTimeoutMsMax}`)
      .optional(),
  })
  .strict();

export type InvokeRequest = z.infer<typeof invokeSchema>;

/** Instance ids as the agent makes them; anything else cannot name an instance. */
export const instanceIdSchema = z.string().regex(/^i-[0-9a-f]{12}$/, 'not an instance id');

export function parseRequest<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const details = result.error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.length ? issue.path.join('.') : what}: ${issue.message}`)
    .join('; ');
  throw new AgentError('HOTMEM_INVALID_REQUEST', details);
}

/**
 * Names of bindings: the OCI runtime's container id, as containerd, CRI-O and Kata make them
 * ([A-Za-z0-9] then [A-Za-z0-9_.-]); usable as a file name and a path segment as they are.
 */
export const bindingNameSchema = z
  .string()
  .max(LIMITS.bindingNameChars, `at most ${LIMITS.bindingNameChars} characters`)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'a container id: [A-Za-z0-9] then [A-Za-z0-9_.-]');

export const createBindingSchema = z
  .object({
    name: bindingNameSchema,
    pid: z.number().int().min(2, 'not init').max(LIMITS.pidMax, `at most ${LIMITS.pidMax}`),
    memoryBytes: memoryBytesSchema,
  })
  .strict();

export type CreateBindingRequest = z.infer<typeof createBindingSchema>;
