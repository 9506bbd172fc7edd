import { pino, type DestinationStream, type Logger } from 'pino'

// Paths whose values never reach a log line: credentials in headers and connection strings.
const REDACT = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  '*.password',
  'password',
  'databaseUrl',
  '*.databaseUrl',
  'connectionString',
  '*.connectionString'
]

export interface LoggerOptions {
  level: string
  destination?: DestinationStream
}

export function createLogger (options: LoggerOptions): Logger {
  const settings = {
    level: options.level,
    redact: { paths: REDACT, censor: '[redacted]' },
    base: { service: 'hibeaver' },
    timestamp: pino.stdTimeFunctions.isoTime
  }
  return options.destination === undefined ? pino(settings) : pino(settings, options.destination)
}

// For logging an address that may carry a password in its user-info part.
export function redactUrl (value: string): string {
  if (!URL.canParse(value)) return '[unparseable url]'
  const url = new URL(value)
  if (url.password !== '') url.password = 'redacted'
  return url.toString()
}
