// Redraws the plot of saved benchmark results: bench-*.json (as scripts/bench.ts writes them)
// to an .svg beside each, so a change of chart reaches figures already in docs/.
//
//   tsx scripts/plot-bench.ts RESULTS.json...
import { readFileSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { reclaimLatencyPlot } from './testbed/report.js';

const resultsSchema = z.object({
  meta: z.object({ accel: z.string() }),
  rows: z
    .array(
      z.object({
        mode: z.enum(['stock', 'hotmem']),
        scenario: z.enum(['untouched', 'idle', 'loaded']),
        sizeMiB: z.number().positive(),
        plugMs: z.number(),
        reclaimMs: z.number(),
        unplugMs: z.number(),
        totalMs: z.number().nonnegative(),
        pagesMigrated: z.number(),
        guestCpuMs: z.number(),
        runs: z.number().int().positive(),
      }),
    )
    .min(1),
});

async function main(files: string[]): Promise<void> {
  if (files.length === 0) throw new Error('usage: plot-bench.ts RESULTS.json...');
  for (const file of files) {
    if (!file.endsWith('.json')) throw new Error(`${file}: not a .json results file`);
    const parsed = resultsSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(`${file}: ${issue?.path.join('.') || 'results'}: ${issue?.message}`);
    }
    const svg = await reclaimLatencyPlot(
      parsed.data.rows,
      `memory reclamation latency (${parsed.data.meta.accel})`,
    );
    const out = file.replace(/\.json$/, '.svg');
    writeFileSync(out, svg);
    console.log(out);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(`plot-bench: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
