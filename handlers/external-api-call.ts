import { z } from 'zod'
import { defineHandler } from '../src/handler.js'
import { MAX_PATH_LENGTH } from '../src/upstream-path.js'

const queryValue = z.union([z.string().max(2048), z.number(), z.boolean()])

// GETs a JSON document from the configured upstream. The client picks only the path and the
// query under UPSTREAM_BASE_URL; the adapter refuses anything that would leave it.
export const externalApiCall = defineHandler({
  name: 'external-api-call',
  description: 'GET a JSON document from the configured upstream; answers its status and body',
  input: z.object({
    path: z.string().min(1).max(MAX_PATH_LENGTH),
    query: z.record(z.string().min(1).max(256), z.union([queryValue, z.array(queryValue).max(100)])).optional()
  }).strict(),
  async process (input, ctx) {
    return await ctx.http.get(input.path, input.query)
  }
})

export default externalApiCall
