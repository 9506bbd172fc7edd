import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { Logger } from 'pino'

// The adapters publish what happens to their resources; this is the one place that logs it.
// Routine events are debug; a connection that failed while idle is worth a warning.
const LEVELS: Readonly<Record<string, 'debug' | 'warn'>> = {
  'hibeaver:db:cancel': 'debug',
  'hibeaver:db:destroyed': 'debug',
  'hibeaver:db:idle-error': 'warn',
  'hibeaver:cpu:stop': 'debug',
  'hibeaver:cpu:fault': 'warn',
  'hibeaver:upstream:retry': 'debug'
}

// Subscribes a logger to every resource channel; returns the unsubscription.
export function logDiagnostics (logger: Logger): () => void {
  const handlers = Object.entries(LEVELS).map(([name, level]) => {
    const handler = (message: unknown): void => {
      const { error, ...fields } = (typeof message === 'object' && message !== null ? message : { message }) as
        Record<string, unknown>
      // pino serialises errors under `err` only; under any other key an Error logs as {}.
      const err = fields.err ?? error
      logger[level]({ channel: name, ...fields, ...(err === undefined ? {} : { err }) }, name.slice('hibeaver:'.length))
    }
    subscribe(name, handler)
    return () => unsubscribe(name, handler)
  })
  return () => { for (const off of handlers) off() }
}
