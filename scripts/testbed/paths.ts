import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout this module belongs to. */
export function projectRoot(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/** Build products kept between runs, outside the checkout (kernels, initramfs, ccache). */
export function cacheDir(): string {
  return process.env.HOTMEM_CACHE ?? join(homedir(), '.cache', 'hotmem');
}
