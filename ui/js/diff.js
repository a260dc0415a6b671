// A line diff of two texts (longest common subsequence, after trimming the common head and
// tail), and JSON pretty-printing with sorted keys so that two versions of an app line up.

/** JSON with object keys sorted at every level, two-space indented. */
export function prettyJson(value) {
  return JSON.stringify(sortKeys(value), null, 2);
}

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = sortKeys(v[k]);
    return out;
  }
  return v;
}

/**
 * Lines of `a` and `b` as edits: [{op: ' ' | '-' | '+', text, a, b}] where `a`/`b` are 1-based
 * line numbers in each side (null where the line is absent).
 */
export function diffLines(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  let head = 0;
  while (head < x.length && head < y.length && x[head] === y[head]) head++;
  let tail = 0;
  while (tail < x.length - head && tail < y.length - head
    && x[x.length - 1 - tail] === y[y.length - 1 - tail]) tail++;
  const xs = x.slice(head, x.length - tail);
  const ys = y.slice(head, y.length - tail);
  const n = xs.length;
  const m = ys.length;
  // lcs[i][j] = LCS length of xs[i..] and ys[j..], in one flat array.
  const w = m + 1;
  const lcs = new Uint32Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i * w + j] = xs[i] === ys[j]
        ? lcs[(i + 1) * w + j + 1] + 1
        : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
    }
  }
  const out = [];
  for (let k = 0; k < head; k++) out.push({ op: ' ', text: x[k], a: k + 1, b: k + 1 });
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && xs[i] === ys[j]) {
      out.push({ op: ' ', text: xs[i], a: head + i + 1, b: head + j + 1 });
      i++; j++;
    } else if (j < m && (i >= n || lcs[i * w + j + 1] >= lcs[(i + 1) * w + j])) {
      out.push({ op: '+', text: ys[j], a: null, b: head + j + 1 });
      j++;
    } else {
      out.push({ op: '-', text: xs[i], a: head + i + 1, b: null });
      i++;
    }
  }
  for (let k = 0; k < tail; k++) {
    out.push({ op: ' ', text: x[x.length - tail + k], a: x.length - tail + k + 1, b: y.length - tail + k + 1 });
  }
  // Removals before additions within each run of changes reads better.
  return reorderRuns(out);
}

function reorderRuns(lines) {
  const out = [];
  let run = [];
  const flush = () => {
    out.push(...run.filter((l) => l.op === '-'), ...run.filter((l) => l.op === '+'));
    run = [];
  };
  for (const l of lines) {
    if (l.op === ' ') { flush(); out.push(l); } else run.push(l);
  }
  flush();
  return out;
}

/**
 * Groups a diff into hunks with `context` unchanged lines around each change; the unchanged
 * stretches between hunks become {skip: n}.
 */
export function hunks(lines, context = 3) {
  const keep = new Array(lines.length).fill(false);
  lines.forEach((l, i) => {
    if (l.op !== ' ') {
      for (let k = Math.max(0, i - context); k <= Math.min(lines.length - 1, i + context); k++) keep[k] = true;
    }
  });
  const out = [];
  let skipped = 0;
  lines.forEach((l, i) => {
    if (keep[i]) {
      if (skipped) out.push({ skip: skipped });
      skipped = 0;
      out.push(l);
    } else skipped++;
  });
  if (skipped) out.push({ skip: skipped });
  return out;
}
