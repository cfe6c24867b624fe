// The IPFS JavaScript reference, driven by tests/content and benchmarks/content.py.
// Usage: node reference.mjs JOBS.json  -> prints a JSON array with one result per job.
// Jobs:
//   {"op": "import", "path": P, "kind": "file"|"dir", "options": {...}, "car": OUT?}
//       -> {"cid", "entries": {relative path: cid}}; with "car", writes the blocks as a CAR v1
//   {"op": "read-car", "car": P}
//       -> {"version", "roots", "blocks", "files": {path: {"cid", "sha256", "size"}}}: every
//          block's sha2-256 checked against its CID, then the first root exported
//   {"op": "bench", "path": P, "options": {...}, "rounds": N}
//       -> {"cid", "seconds": [...]}: import into a black-hole blockstore (CIDs only)
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { readFile, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { CarBlockIterator, CarWriter } from '@ipld/car'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { exporter, recursive } from 'ipfs-unixfs-exporter'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

function importerOptions (options = {}) {
  const result = { profile: options.profile }
  if (options.cidVersion !== undefined) result.cidVersion = options.cidVersion
  if (options.rawLeaves !== undefined) result.rawLeaves = options.rawLeaves
  if (options.chunkSize !== undefined) result.chunker = fixedSize({ chunkSize: options.chunkSize })
  if (options.maxLinks !== undefined) result.layout = balanced({ maxChildrenPerNode: options.maxLinks })
  if (options.shardThreshold !== undefined) result.shardSplitThresholdBytes = options.shardThreshold
  return result
}

async function * walk (root, relative = '') {
  const names = await readdir(join(root, relative))
  if (names.length === 0 && relative !== '') {
    yield { path: relative }
    return
  }
  for (const name of names) {
    const path = relative === '' ? name : `${relative}/${name}`
    const info = await stat(join(root, path))
    if (info.isDirectory()) {
      yield * walk(root, path)
    } else {
      yield { path, content: createReadStream(join(root, path)) }
    }
  }
}

function candidates (job) {
  if (job.kind === 'dir') return walk(job.path)
  return [{ content: createReadStream(job.path) }]
}

// A blockstore that also keeps the order of first writes, for writing the CAR afterwards.
class RecordingBlockstore extends MemoryBlockstore {
  order = []
  async put (cid, bytes, options) {
    if (!(await this.has(cid))) this.order.push(cid)
    return super.put(cid, bytes, options)
  }
}

async function runImport (job) {
  const blockstore = job.car ? new RecordingBlockstore() : new BlackHoleBlockstore()
  const options = importerOptions(job.options)
  if (job.kind === 'dir') options.wrapWithDirectory = true
  const entries = {}
  let last
  for await (const entry of importer(candidates(job), blockstore, options)) {
    entries[entry.path ?? ''] = entry.cid.toString()
    last = entry
  }
  if (job.car) {
    const { writer, out } = CarWriter.create([last.cid])
    const done = new Promise((resolve, reject) => {
      const sink = createWriteStream(job.car)
      Readable.from(out).pipe(sink).on('finish', resolve).on('error', reject)
    })
    for (const cid of blockstore.order) {
      await writer.put({ cid, bytes: await toBytes(blockstore.get(cid)) })
    }
    await writer.close()
    await done
  }
  return { cid: last.cid.toString(), entries }
}

async function toBytes (value) {
  const resolved = await value
  if (resolved instanceof Uint8Array) return resolved
  const parts = []
  for await (const part of resolved) parts.push(part)
  return Buffer.concat(parts)
}

async function readCar (job) {
  const iterator = await CarBlockIterator.fromIterable(createReadStream(job.car))
  const roots = (await iterator.getRoots()).map(cid => cid.toString())
  const blockstore = new MemoryBlockstore()
  let blocks = 0
  for await (const { cid, bytes } of iterator) {
    const digest = createHash('sha256').update(bytes).digest()
    if (cid.multihash.code !== 0x12 || Buffer.compare(Buffer.from(cid.multihash.digest), digest) !== 0) {
      throw new Error(`block ${cid} does not hash to its CID`)
    }
    await blockstore.put(cid, bytes)
    blocks++
  }
  const files = {}
  const [root] = await iterator.getRoots()
  for await (const light of recursive(root, blockstore)) {
    const entry = await exporter(light.cid, blockstore)
    if (entry.type === 'file' || entry.type === 'raw') {
      const hash = createHash('sha256')
      let size = 0
      for await (const chunk of entry.content()) {
        hash.update(chunk)
        size += chunk.length
      }
      const path = light.path.split('/').slice(1).join('/')
      files[path] = { cid: entry.cid.toString(), sha256: hash.digest('hex'), size }
    }
  }
  return { version: iterator.version, roots, blocks, files }
}

async function bench (job) {
  const seconds = []
  let cid
  for (let round = 0; round < (job.rounds ?? 1); round++) {
    const start = process.hrtime.bigint()
    for await (const entry of importer(candidates(job), new BlackHoleBlockstore(), importerOptions(job.options))) {
      cid = entry.cid.toString()
    }
    seconds.push(Number(process.hrtime.bigint() - start) / 1e9)
  }
  return { cid, seconds }
}

const operations = { import: runImport, 'read-car': readCar, bench }
const jobs = JSON.parse(await readFile(process.argv[2], 'utf8'))
const results = []
for (const job of jobs) {
  try {
    results.push(await operations[job.op](job))
  } catch (error) {
    results.push({ error: `${error.name}: ${error.message}` })
  }
}
process.stdout.write(JSON.stringify(results))
