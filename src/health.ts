import underPressure from '@fastify/under-pressure'
import type { FastifyInstance, FastifyReply } from 'fastify'
import type { Config } from './config.js'
import { HiBeaverError } from './errors.js'
import { sendProblem } from './problem.js'
import type { Readiness } from './readiness.js'
import './fastify-types.js'

// Load shedding and the health routes. Over any pressure threshold every route answers
// 503 OVERLOADED with Retry-After, readiness included; liveness never sheds.
export async function health (app: FastifyInstance, pressure: Config['pressure'], readiness: Readiness): Promise<void> {
  const retryAfter = Math.max(1, Math.ceil(pressure.sampleIntervalMs / 1000))

  await app.register(underPressure, {
    maxEventLoopDelay: pressure.maxEventLoopDelayMs,
    maxEventLoopUtilization: pressure.maxEventLoopUtilization,
    maxHeapUsedBytes: pressure.maxHeapUsedBytes,
    maxRssBytes: pressure.maxRssBytes,
    sampleInterval: pressure.sampleIntervalMs,
    pressureHandler: (request, reply, type, value) => {
      const err = new HiBeaverError('OVERLOADED', 'the server is overloaded; retry later', {
        retryAfter,
        details: { pressure: type, value }
      })
      request.failure = err
      sendProblem(reply, err)
    }
  })

  // The process runs and its event loop turns: nothing else, so a restart never follows load.
  app.get('/health/live', {
    config: { quiet: true, pressureHandler: () => undefined }
  }, async () => ({ status: 'ok' }))

  // Probes are logged at debug only; a change of answer is worth a line of its own.
  let lastCode: string | undefined
  const noteChange = (failure: HiBeaverError | undefined): void => {
    if (failure?.code === lastCode) return
    lastCode = failure?.code
    if (failure === undefined) {
      app.log.info('ready again')
    } else {
      app.log.warn({
        code: failure.code,
        detail: failure.message,
        ...(failure.cause === undefined ? {} : { err: failure.cause })
      }, 'not ready')
    }
  }

  const ready = async (_request: unknown, reply: FastifyReply) => {
    const failure = app.lifecycle.phase === 'running'
      ? await readiness.failure()
      : new HiBeaverError('SHUTTING_DOWN', 'the server is shutting down')
    noteChange(failure)
    if (failure === undefined) return { status: 'ok' }

    reply.request.failure = failure
    return sendProblem(reply, failure)
  }
  app.get('/health/ready', { config: { quiet: true } }, ready)
  app.get('/health', { config: { quiet: true } }, ready)
}
