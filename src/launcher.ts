import { spawn } from 'node:child_process'
import { constants } from 'node:os'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createLogger } from './logger.js'

// What `npm start` runs: the server in a process group of its own. Ctrl-C in a terminal signals
// the whole foreground group, which would stop the embedded PostgreSQL and tsx's compiler at
// once, under requests the server is still draining. Here the terminal's signal reaches this
// process only, and the server gets it from here, once.

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
// npm forwards to its script the very signal the terminal also sent the group: two arrive within
// a millisecond or two (measured: 2 ms). Only a repeat after this long is a person asking for an
// immediate exit; a quick double Ctrl-C is still two.
const ECHO_MS = 50

const log = createLogger({ level: 'info' })
// main.ts beside this file under tsx, main.js beside it when compiled.
const main = fileURLToPath(new URL(`main${extname(fileURLToPath(import.meta.url))}`, import.meta.url))
// The IPC channel is only a lifeline: when this process dies, however it dies, the server sees
// the channel close and shuts down as on SIGTERM, instead of serving on as an orphan.
const server = spawn(process.execPath, [...process.execArgv, main], {
  stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
  detached: true
})

let lastForwardedAt = Number.NEGATIVE_INFINITY
function forward (signal: NodeJS.Signals): void {
  const now = performance.now()
  if (now - lastForwardedAt < ECHO_MS) return
  lastForwardedAt = now
  server.kill(signal)
}

for (const signal of SIGNALS) process.on(signal, forward)

server.once('error', (err) => {
  log.fatal({ err }, 'the server process could not be started')
  process.exit(1)
})
server.once('exit', (code, signal) => {
  process.exitCode = code ?? 128 + (signal === null ? 0 : constants.signals[signal])
})
