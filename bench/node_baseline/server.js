// server.js — the baseline a user would otherwise write: Node's http module around the official
// onnxruntime-node package, KServe v2 inference over HTTP/1.1 (JSON, and Triton's binary tensor
// extension), one process per core with the cluster module. Used by bench/run_all.py to put ortserve's
// figures next to it on the same models and load; it is not part of ortserve.
//
//   NODE_PATH=third_party/node_baseline/node_modules \
//   node bench/node_baseline/server.js --model-repository DIR [--port 0] [--port-file PATH] [--workers 2]
//
// The repository has the Triton layout ortserve reads (DIR/<name>/<version>/model.onnx, highest
// version wins). Sessions get ortserve's thread settings (1 intra-op, 1 inter-op thread, sequential)
// because two processes with one ORT pool per core each would fight over two cores. Routes:
//   GET  /v2/health/live, /v2/health/ready       200
//   GET  /v2/models/{m}                           {name, versions, platform, inputs, outputs}
//   POST /v2/models/{m}[/versions/{v}]/infer      KServe v2 JSON ("data" flat or nested) or binary
//        (Inference-Header-Content-Length, "binary_data_size" inputs, "binary_data": true outputs)
'use strict';
const cluster = require('node:cluster');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

function parseArgs(argv) {
  const o = {repo: null, port: 0, portFile: null, workers: 2};
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    if (a === '--model-repository') o.repo = v, i++;
    else if (a === '--port') o.port = Number(v), i++;
    else if (a === '--port-file') o.portFile = v, i++;
    else if (a === '--workers') o.workers = Number(v), i++;
    else throw new Error('unknown argument ' + a);
  }
  if (!o.repo) throw new Error('--model-repository is required');
  return o;
}

const opts = parseArgs(process.argv);

if (cluster.isPrimary) {
  let listening = 0, shuttingDown = false;
  for (let i = 0; i < opts.workers; i++) cluster.fork();
  cluster.on('listening', (w, addr) => {
    if (++listening === opts.workers && opts.portFile) {
      fs.writeFileSync(opts.portFile + '.tmp', String(addr.port));
      fs.renameSync(opts.portFile + '.tmp', opts.portFile);
    }
  });
  cluster.on('exit', (w, code, sig) => {
    if (!shuttingDown) {
      console.error(`worker ${w.process.pid} died (${sig || code})`);
      process.exit(1);
    }
  });
  const stop = () => {
    shuttingDown = true;
    for (const id in cluster.workers) cluster.workers[id].kill('SIGTERM');
    setTimeout(() => process.exit(0), 2000).unref();
    cluster.on('exit', () => { if (Object.keys(cluster.workers).length === 0) process.exit(0); });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  worker().catch((e) => { console.error(e); process.exit(1); });
}

const TYPES = {
  FP32: ['float32', Float32Array], FP64: ['float64', Float64Array], INT32: ['int32', Int32Array],
  INT64: ['int64', BigInt64Array], UINT8: ['uint8', Uint8Array], INT8: ['int8', Int8Array],
  INT16: ['int16', Int16Array], UINT16: ['uint16', Uint16Array], BOOL: ['bool', Uint8Array],
};
const KSERVE = {};
for (const [k, [t]] of Object.entries(TYPES)) KSERVE[t] = k;

async function worker() {
  const ort = require('onnxruntime-node');
  const models = new Map();
  for (const name of fs.readdirSync(opts.repo)) {
    const dir = path.join(opts.repo, name);
    const versions = fs.readdirSync(dir).filter((v) => /^\d+$/.test(v) &&
      fs.existsSync(path.join(dir, v, 'model.onnx'))).map(Number).sort((a, b) => a - b);
    if (!versions.length) continue;
    const version = String(versions[versions.length - 1]);
    const session = await ort.InferenceSession.create(path.join(dir, version, 'model.onnx'), {
      intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
    });
    models.set(name, {name, version, session});
  }
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      handle(ort, models, req, chunks.length === 1 ? chunks[0] : Buffer.concat(chunks))
        .then(([status, headers, body]) => { res.writeHead(status, headers); res.end(body); })
        .catch((e) => reply(res, 500, {error: String(e && e.message || e)}));
    });
  });
  server.keepAliveTimeout = 60000;
  server.listen(opts.port, '127.0.0.1');
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body)});
  res.end(body);
}

function json(status, obj) {
  const body = Buffer.from(JSON.stringify(obj));
  return [status, {'Content-Type': 'application/json', 'Content-Length': body.length}, body];
}

function flatten(data, out) {
  for (const v of data) Array.isArray(v) ? flatten(v, out) : out.push(v);
  return out;
}

async function handle(ort, models, req, body) {
  const url = req.url.split('?')[0];
  if (req.method === 'GET' && (url === '/v2/health/ready' || url === '/v2/health/live')) return [200, {}, ''];
  const m = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(\/infer)?$/.exec(url);
  const model = m && models.get(decodeURIComponent(m[1]));
  if (!model) return json(404, {error: 'unknown model'});
  if (!m[3]) {
    if (req.method !== 'GET') return json(405, {error: 'method not allowed'});
    return json(200, {name: model.name, versions: [model.version], platform: 'onnxruntime_onnx',
                      inputs: model.session.inputNames, outputs: model.session.outputNames});
  }
  if (req.method !== 'POST') return json(405, {error: 'method not allowed'});
  let head, bin = null;
  const ihcl = req.headers['inference-header-content-length'];
  try {
    if (ihcl !== undefined) {
      head = JSON.parse(body.subarray(0, Number(ihcl)).toString());
      bin = body.subarray(Number(ihcl));
    } else {
      head = JSON.parse(body.toString());
    }
  } catch (e) {
    return json(400, {error: 'invalid JSON: ' + e.message});
  }
  const feeds = {};
  let off = 0;
  for (const inp of head.inputs || []) {
    const t = TYPES[inp.datatype];
    if (!t) return json(400, {error: 'unsupported datatype ' + inp.datatype});
    const size = inp.parameters && inp.parameters.binary_data_size;
    let arr;
    if (size !== undefined) {
      const bytes = bin.subarray(off, off + size);
      off += size;
      // A typed array needs an aligned offset: copy when the bytes are not aligned for the type.
      arr = bytes.byteOffset % t[1].BYTES_PER_ELEMENT === 0
        ? new t[1](bytes.buffer, bytes.byteOffset, size / t[1].BYTES_PER_ELEMENT)
        : new t[1](bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + size));
    } else {
      const flat = flatten(inp.data, []);
      arr = t[1] === BigInt64Array ? BigInt64Array.from(flat, BigInt) : t[1].from(flat);
    }
    feeds[inp.name] = new ort.Tensor(t[0], arr, inp.shape);
  }
  let results;
  try {
    results = await model.session.run(feeds);
  } catch (e) {
    return json(400, {error: e.message});
  }
  const wanted = head.outputs && head.outputs.length ? head.outputs : model.session.outputNames.map((n) => ({name: n}));
  const outputs = [], blobs = [];
  for (const o of wanted) {
    const r = results[o.name];
    if (!r) return json(400, {error: 'unknown output ' + o.name});
    const d = {name: o.name, datatype: KSERVE[r.type] || r.type, shape: r.dims};
    if (bin !== null && o.parameters && o.parameters.binary_data) {
      const b = Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength);
      d.parameters = {binary_data_size: b.length};
      blobs.push(b);
    } else {
      d.data = r.type === 'int64' ? Array.from(r.data, Number) : Array.from(r.data);
    }
    outputs.push(d);
  }
  const out = Buffer.from(JSON.stringify({model_name: model.name, model_version: model.version, outputs}));
  if (!blobs.length) return [200, {'Content-Type': 'application/json', 'Content-Length': out.length}, out];
  const all = Buffer.concat([out, ...blobs]);
  return [200, {'Content-Type': 'application/octet-stream', 'Inference-Header-Content-Length': out.length,
                'Content-Length': all.length}, all];
}
