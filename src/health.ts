import underPressure from '@fastify/under-pressure'
import type { FastifyInstance } from 'fastify'
import { HiBeaverError } from './errors.js'
import { sendProblem } from './problem.js'
import type { Config } from './config.js'

// Load shedding and GET /health. Over any threshold every route answers 503 OVERLOADED with
// Retry-After, /health included: that is what a load balancer should see.
export async function health (app: FastifyInstance, pressure: Config['pressure']): Promise<void> {
  const retryAfter = Math.max(1, Math.ceil(pressure.sampleIntervalMs / 1000))

  await app.register(underPressure, {
    maxEventLoopDelay: pressure.maxEventLoopDelayMs,
    maxEventLoopUtilization: pressure.maxEventLoopUtilization,
    maxHeapUsedBytes: pressure.maxHeapUsedBytes,
    maxRssBytes: pressure.maxRssBytes,
    sampleInterval: pressure.sampleIntervalMs,
    pressureHandler: (_request, reply, type, value) => {
      const err = new HiBeaverError('OVERLOADED', 'the server is overloaded; retry later', {
        retryAfter,
        details: { pressure: type, value }
      })
      reply.request.failure = err
      sendProblem(reply, err)
    }
  })

  app.get('/health', { config: { quiet: true } }, async () => ({ status: 'ok' }))
}
