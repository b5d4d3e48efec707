/**
 * Deterministic uniform numbers in [0, 1) from a 32-bit seed (mulberry32: small, fast and the
 * same on every platform), for what must repeat from run to run: generated traces, bootstrap
 * intervals, fuzz inputs.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
