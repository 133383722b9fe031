/** Median of a list of numbers (NaN for an empty list). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Parses ffmpeg's psnr filter summary: the "average:" value of the last PSNR line. */
export function parsePsnr(stderr: string): number {
  const lines = stderr.split('\n').filter((l) => l.includes('PSNR') && l.includes('average:'));
  const m = /average:(\S+)/.exec(lines.at(-1) ?? '');
  if (!m) return Number.NaN;
  return m[1] === 'inf' ? Number.POSITIVE_INFINITY : Number(m[1]);
}

/** Renders rows as a Markdown table. */
export function markdownTable(head: string[], rows: (string | number)[][]): string {
  const fmt = (v: string | number): string => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : v);
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.map(fmt).join(' | ')} |`)].join('\n');
}
