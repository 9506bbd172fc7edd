import type { HealthResult } from './compare-health.js'
import type { MemoryResult } from './compare-memory.js'
import type { OverheadResult } from './compare-overhead.js'
import type { HeapResult } from './overhead.js'
import type { ServerKind } from './compare-servers.js'
import type { ThroughputResult } from './compare-throughput.js'
import type { WasteResult } from './compare-waste.js'

// The results of one `npm run bench` as JSON, as a markdown table and as an SVG chart.

export interface Machine {
  date: string
  node: string
  cpus: number
  cpuModel: string
  memoryGiB: number
  os: string
  postgres: string
}

export interface Results {
  mode: 'full' | 'quick'
  machine: Machine
  seedEvents: number
  seeded: { inserted: number, durationMs: number }
  inputs: Record<string, unknown>
  overhead: OverheadResult
  throughput: ThroughputResult
  health: Record<ServerKind, HealthResult>
  waste: Record<'db' | 'cpu' | 'upstream', Record<ServerKind, WasteResult>>
  memory: Record<ServerKind, MemoryResult>
  seconds: number
}

const n = (value: number, digits = 0) =>
  Number.isFinite(value)
    ? value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : 'n/a'
const ms = (value: number) => `${n(value, value < 10 ? 1 : 0)} ms`
const times = (ours: number, theirs: number) => (theirs === 0 ? 'n/a' : `${n(ours / theirs, 2)}×`)
const lessBy = (ours: number, theirs: number) =>
  ours <= 0 ? (theirs > 0 ? 'none left' : '—') : `${n(theirs / ours, 0)}× less`

type Row = [string, string, string, string]

function wasteRows (label: string, unit: string, results: Results['waste']['db']): Row[] {
  const { naive, hibeaver } = results
  const cpu = naive.backendCpuSeconds !== undefined && hibeaver.backendCpuSeconds !== undefined
    ? [[`${label}: backend CPU seconds spent after the client left`,
        `${n(naive.backendCpuSeconds, 2)} s`, `${n(hibeaver.backendCpuSeconds, 2)} s`,
        lessBy(hibeaver.backendCpuSeconds, naive.backendCpuSeconds)] satisfies Row]
    : []
  return [
    [`${label}: ${unit} spent after the client left (${naive.requests} requests)`,
      `${n(naive.secondsAfterLeave, 2)} s`, `${n(hibeaver.secondsAfterLeave, 2)} s`,
      lessBy(hibeaver.secondsAfterLeave, naive.secondsAfterLeave)],
    ...cpu,
    [`${label}: disconnect-to-stop p50 / p99`,
      `${ms(naive.stopMs.p50)} / ${ms(naive.stopMs.p99)}`,
      `${ms(hibeaver.stopMs.p50)} / ${ms(hibeaver.stopMs.p99)}`, '']
  ]
}

const heap = (h: HeapResult) =>
  `${n(h.heapBeforeMiB, 1)} → ${n(h.heapAfterMiB, 1)} MiB (${n(h.heapGrowthBytesPerRequest, 1)} B/request)`

function rows (r: Results): Row[] {
  const out: Row[] = [
    ['Overhead: trivial handler, requests/s (naive column: bare Fastify route)',
      n(r.overhead.bare.rps), n(r.overhead.hibeaver.rps), times(r.overhead.hibeaver.rps, r.overhead.bare.rps)],
    ['Overhead of the request scope alone (naive column: a timer and an AbortController per request)',
      n(r.overhead.timer.rps), n(r.overhead.scope.rps),
      `${times(r.overhead.scope.rps, r.overhead.bare.rps)} vs ` +
        `${times(r.overhead.timer.rps, r.overhead.bare.rps)} of bare`],
    [
      `Heap growth over ${n(r.overhead.heap.hibeaver.requests)} requests, half cancelled ` +
        '(naive column: AbortSignal.any per request)',
      heap(r.overhead.heap.anySignal), heap(r.overhead.heap.hibeaver), ''
    ]
  ]
  for (const [name, t] of Object.entries(r.throughput)) {
    const failed = (m: typeof t.naive) => (m.errors + m.non2xx > 0 ? ` (${m.errors + m.non2xx} failed)` : '')
    out.push([`Happy path, requests/s: ${name}`,
      `${n(t.naive.rps)}${failed(t.naive)}`, `${n(t.hibeaver.rps)}${failed(t.hibeaver)}`,
      times(t.hibeaver.rps, t.naive.rps)])
  }
  out.push(...wasteRows('Database', 'statement seconds', r.waste.db))
  out.push(...wasteRows('CPU', 'CPU seconds', r.waste.cpu))
  out.push(...wasteRows('Upstream', 'seconds serving', r.waste.upstream))

  const h = r.health
  out.push(['`GET /health` p99 while the CPU handler is saturated (idle p99)',
    `${ms(h.naive.saturated.p99)} (${ms(h.naive.idle.p99)})`,
    `${ms(h.hibeaver.saturated.p99)} (${ms(h.hibeaver.idle.p99)})`,
    lessBy(h.hibeaver.saturated.p99, h.naive.saturated.p99)])
  out.push(['Calculations answered meanwhile, requests/s',
    n(h.naive.calculationRps, 1), n(h.hibeaver.calculationRps, 1),
    times(h.hibeaver.calculationRps, h.naive.calculationRps)])

  const m = r.memory
  const rss = (x: MemoryResult) => `${n(x.rssBeforeMiB)} → ${n(x.rssAfterMiB)} MiB (peak ${n(x.peakRssMiB)})`
  out.push([`RSS before → after ${n(m.naive.requests)} cancelled requests`, rss(m.naive), rss(m.hibeaver), ''])
  out.push(['Time to finish with them after the last client left',
    `${n(m.naive.drainS, 2)} s`, `${n(m.hibeaver.drainS, 2)} s`, ''])
  return out
}

export function toMarkdown (r: Results): string {
  const m = r.machine
  const table = [
    '| figure | naive | HiBeaver | HiBeaver vs naive |',
    '| --- | ---: | ---: | ---: |',
    ...rows(r).map((row) => `| ${row.join(' | ')} |`)
  ]
  return [
    '# HiBeaver against the naive design',
    '',
    `${r.mode === 'quick' ? 'A quick (smoke) run' : 'One run'} of \`npm run bench\` on ${m.date}: ` +
      `${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}, PostgreSQL ${m.postgres}, ` +
      `${n(r.seedEvents)} events seeded; ${r.seconds} s in all.`,
    '',
    ...table,
    '',
    '![HiBeaver against the naive design](latest.svg)',
    '',
    'How each figure is measured:',
    '',
    '- Both servers run in processes of their own, against the same embedded PostgreSQL and the same',
    '  demo upstream, with the same pool sizes; the load generator (autocannon) runs in a third.',
    '  The naive server has no cancellation at all: a pg query never cancelled, an undici call',
    '  without a signal, the calculation on the event loop. Both validate with the same zod schemas.',
    '- Wasted work: requests go out in waves whose clients all leave 100 ms after sending; the next',
    '  wave starts when the server is idle again. Database: statement time past the departure, as',
    '  `pg_stat_activity` reports it (`query_start`, `state_change`), summed over statements that ran',
    '  side by side; and the CPU time of the server\'s PostgreSQL backend processes meanwhile',
    '  (`/proc/<pid>/stat`). CPU: the server process\'s CPU',
    '  time from the departure until it is idle again (`/proc/<pid>/stat`). Upstream: how long the',
    '  demo upstream went on producing answers after the departure (its connection close, or the',
    '  answer\'s completion when nobody closed it).',
    '- Disconnect-to-stop: from the departure to the statement\'s end (PostgreSQL), to the',
    '  calculation\'s end (the server\'s report), to the upstream connection\'s close.',
    '- `/health`: one GET every 20 ms, open loop, timed from when it was due, while clients keep',
    '  the calculation handler busy.',
    '- Memory: a fresh server, RSS and heap after a full GC before and after the cancelled requests,',
    '  each waiting on a 100 ms upstream answer and abandoned by its client after 20 ms.',
    '',
    `Inputs: \`${JSON.stringify(r.inputs)}\`. The raw figures are in \`latest.json\`.`,
    ''
  ].join('\n')
}

// One pair of bars per figure, each pair on its own scale: the longer bar is the whole width.
export function toSvg (r: Results): string {
  const figures: Array<[string, number, number, string]> = [
    ['database seconds wasted', r.waste.db.naive.secondsAfterLeave, r.waste.db.hibeaver.secondsAfterLeave, 's'],
    ['CPU seconds wasted', r.waste.cpu.naive.secondsAfterLeave, r.waste.cpu.hibeaver.secondsAfterLeave, 's'],
    [
      'upstream seconds wasted',
      r.waste.upstream.naive.secondsAfterLeave,
      r.waste.upstream.hibeaver.secondsAfterLeave,
      's'
    ],
    ['database stop p99', r.waste.db.naive.stopMs.p99, r.waste.db.hibeaver.stopMs.p99, 'ms'],
    ['CPU stop p99', r.waste.cpu.naive.stopMs.p99, r.waste.cpu.hibeaver.stopMs.p99, 'ms'],
    ['upstream stop p99', r.waste.upstream.naive.stopMs.p99, r.waste.upstream.hibeaver.stopMs.p99, 'ms'],
    ['/health p99, CPU saturated', r.health.naive.saturated.p99, r.health.hibeaver.saturated.p99, 'ms']
  ]
  const width = 760
  const left = 210
  const barWidth = width - left - 110
  const rowHeight = 46
  const top = 50
  const height = top + figures.length * rowHeight + 20
  const text = (x: number, y: number, content: string, extra = '') =>
    `<text x="${x}" y="${y}" ${extra}>${content.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text>`

  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      'font-family="system-ui, sans-serif" font-size="13">',
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    text(16, 24, `Work after the client left, and a blocked loop: naive vs HiBeaver (${r.machine.date.slice(0, 10)})`,
      'font-weight="600" font-size="15"'),
    `<rect x="${left}" y="32" width="12" height="10" fill="#9aa0a6"/>`, text(left + 16, 41, 'naive'),
    `<rect x="${left + 70}" y="32" width="12" height="10" fill="#d9822b"/>`, text(left + 86, 41, 'HiBeaver')
  ]
  figures.forEach(([label, naive, ours, unit], i) => {
    const y = top + i * rowHeight
    const scale = Math.max(naive, ours, Number.EPSILON)
    const bar = (value: number, dy: number, color: string) => {
      const w = Math.max(1, (value / scale) * barWidth)
      const shown = unit === 's' ? n(value, 2) : n(value, value < 10 ? 1 : 0)
      return `<rect x="${left}" y="${y + dy}" width="${w.toFixed(1)}" height="14" fill="${color}"/>` +
        text(left + w + 6, y + dy + 11, `${shown} ${unit}`)
    }
    parts.push(text(16, y + 20, label), bar(naive, 4, '#9aa0a6'), bar(ours, 21, '#d9822b'))
  })
  parts.push('</svg>', '')
  return parts.join('\n')
}
