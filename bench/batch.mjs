// batch.mjs - bench/batch's client: a LINES-line chat file through gantry-api
// with the official openai package; prints "bench=<json>" (upload, create and
// create-to-completed seconds, requests/s).
import fs from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(process.env.GANTRY_SDK_DIR + '/package.json');
const OpenAI = require('openai').default;

const lines = Number(process.argv[2] || 50000);
const a = new OpenAI({ baseURL: process.env.GANTRY_API_URL + '/v1', apiKey: process.env.KEY_A, maxRetries: 0, timeout: 600000 });
const path = `${process.env.TMPDIR || '/tmp'}/gantry-bench-batch-${process.pid}.jsonl`;
const out = fs.createWriteStream(path);
for (let i = 0; i < lines; i++)
  out.write(JSON.stringify({ custom_id: `b-${i}`, method: 'POST', url: '/v1/chat/completions',
    body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `Bench line ${i}: one word please` }], max_tokens: 8 } }) + '\n');
await new Promise((r) => out.end(r));
const t0 = Date.now();
const file = await a.files.create({ file: fs.createReadStream(path), purpose: 'batch' });
const t1 = Date.now();
let b = await a.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
const t2 = Date.now();
while (!['completed', 'failed', 'cancelled', 'expired'].includes(b.status)) {
  await new Promise((r) => setTimeout(r, 250)); // a client's poll interval
  b = await a.batches.retrieve(b.id);
}
const t3 = Date.now();
fs.unlinkSync(path);
console.log('bench=' + JSON.stringify({ lines, bytes: file.bytes, status: b.status, counts: b.request_counts,
  upload_s: (t1 - t0) / 1000, create_s: (t2 - t1) / 1000, create_to_completed_s: (t3 - t1) / 1000,
  requests_per_s: Math.round(lines / ((t3 - t1) / 1000)) }));
