// Summaries of reclamation benchmark samples: medians per mode, scenario and size, a
// Markdown table, the HotMem/stock ratios with bootstrap intervals, and an SVG plot of
// reclamation latency against size.
const MiB = 1024 * 1024;

export interface Sample {
  mode: 'stock' | 'hotmem';
  scenario: 'untouched' | 'idle' | 'loaded';
  sizeBytes: number;
  plugMs: number;
  /** Guest-side reclaim (the whole HOTMEM_IOC_RECLAIM, timed in the guest) before the unplug; 0 for stock. */
  reclaimMs: number;
  /** Of reclaimMs, the offlining of the blocks, as the kernel timed it; 0 for stock. */
  offlineMs: number;
  /** virtio-mem unplug, seen from the host. */
  unplugMs: number;
  pagesMigrated: number;
  guestCpuMs: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** From scale-down to the memory being back with the host. */
const totalMs = (s: Sample) => s.reclaimMs + s.unplugMs;

export interface Row {
  mode: Sample['mode'];
  scenario: Sample['scenario'];
  sizeMiB: number;
  plugMs: number;
  reclaimMs: number;
  unplugMs: number;
  /** reclaimMs + unplugMs: from scale-down to the memory being back with the host. */
  totalMs: number;
  pagesMigrated: number;
  guestCpuMs: number;
  runs: number;
}

const groupKey = (mode: Sample['mode'], scenario: Sample['scenario'], sizeBytes: number) =>
  `${mode}/${scenario}/${sizeBytes}`;

/** The samples of each mode, scenario and size, in the order the groups first appear. */
function groupSamples(samples: Sample[]): Map<string, Sample[]> {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const key = groupKey(s.mode, s.scenario, s.sizeBytes);
    const group = groups.get(key);
    if (group) group.push(s);
    else groups.set(key, [s]);
  }
  return groups;
}

export function summarize(samples: Sample[]): Row[] {
  return [...groupSamples(samples).values()].map((g) => {
    const first = g[0] as Sample;
    return {
      mode: first.mode,
      scenario: first.scenario,
      sizeMiB: first.sizeBytes / MiB,
      plugMs: median(g.map((s) => s.plugMs)),
      reclaimMs: median(g.map((s) => s.reclaimMs)),
      unplugMs: median(g.map((s) => s.unplugMs)),
      totalMs: median(g.map(totalMs)),
      pagesMigrated: median(g.map((s) => s.pagesMigrated)),
      guestCpuMs: median(g.map((s) => s.guestCpuMs)),
      runs: g.length,
    };
  });
}

export function table(rows: Row[]): string {
  const header = [
    'mode',
    'scenario',
    'size MiB',
    'plug ms',
    'reclaim ms',
    'unplug ms',
    'total ms',
    'pages migrated',
    'guest CPU ms',
    'runs',
  ];
  const cells = rows.map((r) => [
    r.mode,
    r.scenario,
    String(r.sizeMiB),
    r.plugMs.toFixed(1),
    r.reclaimMs.toFixed(1),
    r.unplugMs.toFixed(1),
    r.totalMs.toFixed(1),
    String(r.pagesMigrated),
    String(r.guestCpuMs),
    String(r.runs),
  ]);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...cells.map((c) => (c[i] as string).length)),
  );
  // Text columns left-aligned, numbers right-aligned.
  const fmt = (c: string[]) =>
    `| ${c.map((x, i) => (i < 2 ? x.padEnd(widths[i] as number) : x.padStart(widths[i] as number))).join(' | ')} |`;
  return [
    fmt(header),
    `|${widths.map((w) => '-'.repeat(w + 1)).join('-|')}-|`,
    ...cells.map(fmt),
  ].join('\n');
}

/** mulberry32: a small seeded generator, so that a report of the same samples reads the same. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fewer runs than this give no interval: a resampled median of 2 or 3 values says little. */
const MIN_RUNS_FOR_INTERVAL = 5;
const RESAMPLES = 2000;

/**
 * The 95% percentile-bootstrap interval of median(a) / median(b): both groups resampled with
 * replacement, independently. Undefined with fewer than MIN_RUNS_FOR_INTERVAL runs in either.
 */
export function ratioInterval(a: number[], b: number[]): [number, number] | undefined {
  if (a.length < MIN_RUNS_FOR_INTERVAL || b.length < MIN_RUNS_FOR_INTERVAL) return undefined;
  const random = seededRandom(a.length * 7919 + b.length);
  const resample = (xs: number[]) => xs.map(() => xs[Math.floor(random() * xs.length)] as number);
  const ratios = Array.from(
    { length: RESAMPLES },
    () => median(resample(a)) / median(resample(b)),
  ).sort((x, y) => x - y);
  return [
    ratios[Math.floor(0.025 * RESAMPLES)] as number,
    ratios[Math.ceil(0.975 * RESAMPLES) - 1] as number,
  ];
}

/**
 * Ratios measured in one run, of median totals: stock over HotMem per scenario and size, and
 * HotMem loaded over idle, each with its 95% bootstrap interval when there were enough runs.
 */
export function ratios(samples: Sample[]): string[] {
  const groups = groupSamples(samples);
  const totals = (mode: Sample['mode'], scenario: Sample['scenario'], size: number) =>
    (groups.get(groupKey(mode, scenario, size)) ?? []).map(totalMs);
  const ratio = (name: string, a: number[], b: number[], digits: number) => {
    const interval = ratioInterval(a, b);
    const range = interval ? ` (95% CI ${interval.map((r) => r.toFixed(digits)).join('-')})` : '';
    return `${name} ${(median(a) / median(b)).toFixed(digits)}x${range}`;
  };
  const lines: string[] = [];
  for (const size of [...new Set(samples.map((s) => s.sizeBytes))].sort((a, b) => a - b)) {
    const parts: string[] = [];
    for (const scenario of ['untouched', 'idle', 'loaded'] as const) {
      const stock = totals('stock', scenario, size);
      const hotmem = totals('hotmem', scenario, size);
      if (stock.length && hotmem.length)
        parts.push(ratio(`${scenario} stock/hotmem`, stock, hotmem, 1));
    }
    const idle = totals('hotmem', 'idle', size);
    const loaded = totals('hotmem', 'loaded', size);
    if (idle.length && loaded.length) parts.push(ratio('hotmem loaded/idle', loaded, idle, 2));
    if (parts.length) lines.push(`${size / MiB} MiB: ${parts.join(', ')}`);
  }
  return lines;
}

/** Reclamation latency against size, one line per mode/scenario, log-scaled latency. */
export function svgPlot(rows: Row[], title: string): string {
  const W = 640;
  const H = 400;
  const pad = { l: 70, r: 170, t: 40, b: 50 };
  const sizes = [...new Set(rows.map((r) => r.sizeMiB))].sort((a, b) => a - b);
  const ys = rows.map((r) => Math.max(r.totalMs, 0.1));
  const yMin = 10 ** Math.floor(Math.log10(Math.min(...ys)));
  const yMax = 10 ** Math.ceil(Math.log10(Math.max(...ys)));
  const x = (s: number) =>
    pad.l + (sizes.length > 1 ? (sizes.indexOf(s) / (sizes.length - 1)) * (W - pad.l - pad.r) : 0);
  const y = (ms: number) =>
    H -
    pad.b -
    ((Math.log10(Math.max(ms, 0.1)) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) *
      (H - pad.t - pad.b);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
  const series = [...new Set(rows.map((r) => `${r.mode} ${r.scenario}`))];
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`,
    `<line x1="${pad.l}" y1="${H - pad.b}" x2="${W - pad.r}" y2="${H - pad.b}" stroke="black"/>`,
    `<line x1="${pad.l}" y1="${pad.t}" x2="${pad.l}" y2="${H - pad.b}" stroke="black"/>`,
    `<text x="${(pad.l + W - pad.r) / 2}" y="${H - 12}" text-anchor="middle">reclaimed size (MiB)</text>`,
    `<text transform="translate(16 ${(pad.t + H - pad.b) / 2}) rotate(-90)" text-anchor="middle">reclamation latency (ms, log)</text>`,
  ];
  for (const s of sizes) {
    parts.push(`<text x="${x(s)}" y="${H - pad.b + 16}" text-anchor="middle">${s}</text>`);
  }
  for (let d = yMin; d <= yMax; d *= 10) {
    parts.push(
      `<line x1="${pad.l - 4}" y1="${y(d)}" x2="${W - pad.r}" y2="${y(d)}" stroke="#ddd"/>`,
    );
    parts.push(`<text x="${pad.l - 6}" y="${y(d) + 4}" text-anchor="end">${d}</text>`);
  }
  series.forEach((name, i) => {
    const pts = rows
      .filter((r) => `${r.mode} ${r.scenario}` === name)
      .sort((a, b) => a.sizeMiB - b.sizeMiB)
      .map((r) => `${x(r.sizeMiB).toFixed(1)},${y(r.totalMs).toFixed(1)}`);
    const color = colors[i % colors.length];
    parts.push(
      `<polyline points="${pts.join(' ')}" fill="none" stroke="${color}" stroke-width="2"/>`,
    );
    for (const p of pts) {
      const [cx, cy] = p.split(',');
      parts.push(`<circle cx="${cx}" cy="${cy}" r="3" fill="${color}"/>`);
    }
    parts.push(
      `<rect x="${W - pad.r + 12}" y="${pad.t + i * 20}" width="12" height="12" fill="${color}"/>`,
    );
    parts.push(`<text x="${W - pad.r + 30}" y="${pad.t + i * 20 + 10}">${name}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}
