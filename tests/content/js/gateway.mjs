// A trustless gateway (https://specs.ipfs.tech/http-gateways/trustless-gateway/) serving the
// JS reference's blockstore, for tests/content/test_fetch.py and benchmarks/content.py.
// Usage: node gateway.mjs DIR PROFILE -> imports DIR with ipfs-unixfs-importer under PROFILE,
// listens on 127.0.0.1 (random port), prints {"port", "root", "entries"} as one JSON line and
// serves until stdin closes.
//   GET /ipfs/<cid>?format=raw | Accept: application/vnd.ipld.raw  -> the block
//   GET /ipfs/<cid>?format=car | Accept: application/vnd.ipld.car  -> CAR v1 of the DAG (dfs, no dups)
//   GET /requests -> {"<format> <cid>": count} of every /ipfs request served so far
import { createReadStream } from 'node:fs'
import { readdir, stat } from 'node:fs/promises'
import http from 'node:http'
import { join } from 'node:path'
import { CarWriter } from '@ipld/car'
import * as dagPb from '@ipld/dag-pb'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { importer } from 'ipfs-unixfs-importer'
import { CID } from 'multiformats/cid'

async function * walk (root, relative = '') {
  for (const name of await readdir(join(root, relative))) {
    const path = relative === '' ? name : `${relative}/${name}`
    if ((await stat(join(root, path))).isDirectory()) yield * walk(root, path)
    else yield { path, content: createReadStream(join(root, path)) }
  }
}

async function toBytes (value) {
  const resolved = await value
  if (resolved instanceof Uint8Array) return resolved
  const parts = []
  for await (const part of resolved) parts.push(part)
  return Buffer.concat(parts)
}

const [directory, profile] = process.argv.slice(2)
const blockstore = new MemoryBlockstore()
const entries = {}
let root
for await (const entry of importer(walk(directory), blockstore, { profile, wrapWithDirectory: true })) {
  entries[entry.path ?? ''] = entry.cid.toString()
  root = entry.cid
}

const requests = {}

function wantsCar (url, accept) {
  const format = url.searchParams.get('format')
  if (accept.includes('application/vnd.ipld.car')) return true
  if (accept.includes('application/vnd.ipld.raw')) return false
  return format === 'car'
}

// The header comes from @ipld/car's own writer; the sections (varint length, CID, bytes) are
// written straight to the socket, so that serving is not slower than the network.
async function carHeader (cid) {
  const { writer, out } = CarWriter.create([cid])
  const parts = []
  const collecting = (async () => { for await (const part of out) parts.push(part) })()
  await writer.close()
  await collecting
  return Buffer.concat(parts)
}

function varint (value) {
  const bytes = []
  while (value >= 0x80) {
    bytes.push((value & 0x7f) | 0x80)
    value = Math.floor(value / 128)
  }
  bytes.push(value)
  return Buffer.from(bytes)
}

async function serveCar (cid, response) {
  response.writeHead(200, {
    'Content-Type': 'application/vnd.ipld.car; version=1; order=dfs; dups=n',
    'X-Content-Type-Options': 'nosniff'
  })
  const send = async (chunk) => {
    if (!response.write(chunk)) await new Promise(resolve => response.once('drain', resolve))
  }
  await send(await carHeader(cid))
  const seen = new Set()
  const visit = async (node) => {
    const key = node.toString()
    if (seen.has(key)) return
    seen.add(key)
    const bytes = await toBytes(blockstore.get(node))
    await send(Buffer.concat([varint(node.bytes.length + bytes.length), node.bytes]))
    await send(bytes)
    if (node.code === dagPb.code) {
      for (const link of dagPb.decode(bytes).Links) await visit(link.Hash)
    }
  }
  await visit(cid)
  response.end()
}

const server = http.createServer(async (request, response) => {
  try {
    const url = new URL(request.url, 'http://127.0.0.1')
    if (url.pathname === '/requests') {
      response.writeHead(200, { 'Content-Type': 'application/json' })
      response.end(JSON.stringify(requests))
      return
    }
    const match = /^\/ipfs\/([^/]+)\/?$/.exec(url.pathname)
    if (request.method !== 'GET' || match === null) {
      response.writeHead(match === null ? 404 : 405).end()
      return
    }
    let cid
    try {
      cid = CID.parse(match[1])
    } catch {
      response.writeHead(400).end('invalid CID')
      return
    }
    const car = wantsCar(url, request.headers.accept ?? '')
    const key = `${car ? 'car' : 'raw'} ${cid}`
    requests[key] = (requests[key] ?? 0) + 1
    if (!(await blockstore.has(cid))) {
      response.writeHead(404).end('block not found')
      return
    }
    if (car) {
      await serveCar(cid, response)
    } else {
      const bytes = await toBytes(blockstore.get(cid))
      response.writeHead(200, {
        'Content-Type': 'application/vnd.ipld.raw',
        'Content-Length': bytes.length,
        'X-Content-Type-Options': 'nosniff'
      })
      response.end(bytes)
    }
  } catch (error) {
    if (!response.headersSent) response.writeHead(500)
    response.end()
  }
})

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port, root: root.toString(), entries }) + '\n')
})
process.stdin.resume()
process.stdin.on('end', () => process.exit(0))
