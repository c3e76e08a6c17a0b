// openai_batch.mjs - drives gantry-api with the official `openai` package
// (files.create, batches.create/retrieve/list/cancel, files.content) and
// checks what the vendor promises: every line in exactly one of the output
// and error files by custom_id, request_counts equal to the files. Prints
// "summary=<json>" for tests/e2e/test_e2e_batch_api.c; exits 1 on a failure.
import fs from 'node:fs';
import OpenAI from 'openai';

const env = (k) => { if (!process.env[k]) throw new Error(`${k} not set`); return process.env[k]; };
const baseURL = env('GANTRY_API_URL') + '/v1';
const mode = process.argv[2] || 'complete';   // complete | cancel | expire
const lines = Number(process.argv[3] || 1000);
const deadlineMs = Number(process.env.GANTRY_SDK_DEADLINE_MS || 300000);
const a = new OpenAI({ baseURL, apiKey: env('KEY_A'), maxRetries: 0, timeout: 120000 });
const b = new OpenAI({ baseURL, apiKey: env('KEY_B'), maxRetries: 0 });
const revoked = new OpenAI({ baseURL, apiKey: env('KEY_REVOKED'), maxRetries: 0 });

let failures = 0;
const check = (ok, what) => { if (!ok) { failures++; console.error(`FAIL ${what}`); } else console.error(`ok   ${what}`); };
const statusOf = async (p) => { try { await p; return 200; } catch (e) { return e.status ?? -1; } };

// The input: valid chat lines, plus (complete mode) a few bad ones.
const bad = mode === 'complete' ? [
  'this is not json',
  JSON.stringify({ custom_id: 'bad-url', method: 'POST', url: '/v1/embeddings', body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] } }),
  JSON.stringify({ custom_id: 'bad-method', method: 'GET', url: '/v1/chat/completions', body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] } }),
  JSON.stringify({ custom_id: 'x'.repeat(65), method: 'POST', url: '/v1/chat/completions', body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] } }),
  JSON.stringify({ custom_id: 'bad-body', method: 'POST', url: '/v1/chat/completions', body: { model: 'gpt-4o-mini' } }),
  JSON.stringify({ custom_id: 'bad-role', method: 'POST', url: '/v1/chat/completions', body: { model: 'gpt-4o-mini', messages: [{ role: 'wizard', content: 'x' }] } }),
] : [];
const valid = lines - bad.length;
const path = `${process.env.TMPDIR || '/tmp'}/gantry-batch-${process.pid}-${mode}.jsonl`;
const out = fs.createWriteStream(path);
const ids = [];
for (let i = 0, j = 0; i < lines; i++) {
  if (bad.length && i % Math.floor(lines / bad.length) === 7 && j < bad.length) { out.write(bad[j++] + '\n'); continue; }
  const id = `req-${i}`;
  ids.push(id);
  out.write(JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/chat/completions',
    body: { model: 'gpt-4o-mini', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: `Line ${i}: say hi` }], max_tokens: 16 } }) + '\n');
}
await new Promise((r) => out.end(r));
check(ids.length === valid, `input has ${valid} valid lines (${ids.length})`);

const file = await a.files.create({ file: fs.createReadStream(path), purpose: 'batch' });
check(file.object === 'file' && file.purpose === 'batch' && file.bytes === fs.statSync(path).size,
      `files.create: ${file.id}, ${file.bytes} bytes`);
const again = await a.files.retrieve(file.id);
check(again.id === file.id && again.bytes === file.bytes, 'files.retrieve');
const back = await (await a.files.content(file.id)).text();
check(back === fs.readFileSync(path, 'utf8'), 'files.content returns the upload byte for byte');

const batch = await a.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions',
  completion_window: process.env.GANTRY_WINDOW || '24h', metadata: { run: mode } });
check(batch.object === 'batch' && ['validating', 'in_progress'].includes(batch.status),
      `batches.create: ${batch.id} ${batch.status}`);
check(batch.request_counts.total === lines, `request_counts.total ${batch.request_counts.total} = ${lines}`);

// Tenancy and keys.
check(await statusOf(b.files.retrieve(file.id)) === 404, "another tenant's key: file 404");
check(await statusOf(b.batches.retrieve(batch.id)) === 404, "another tenant's key: batch 404");
check(await statusOf(b.files.content(file.id)) === 404, "another tenant's key: file content 404");
check(await statusOf(b.batches.cancel(batch.id)) === 404, "another tenant's key: cancel 404");
check(await statusOf(revoked.batches.retrieve(batch.id)) === 401, 'revoked key: 401');
check(await statusOf(revoked.files.create({ file: fs.createReadStream(path), purpose: 'batch' })) === 401,
      'revoked key: upload 401');

const seen = new Set();
let cur = batch;
const t0 = Date.now();
let cancelledAt = null;
while (!['completed', 'failed', 'cancelled', 'expired'].includes(cur.status)) {
  if (Date.now() - t0 > deadlineMs) { check(false, `batch ended within ${deadlineMs} ms (status ${cur.status})`); break; }
  await new Promise((r) => setTimeout(r, 200)); // poll interval of a client, not a wait for a condition
  cur = await a.batches.retrieve(batch.id);
  seen.add(cur.status);
  if (mode === 'cancel' && !cancelledAt && cur.request_counts.completed > 0) {
    const c = await a.batches.cancel(batch.id);
    cancelledAt = Date.now();
    check(c.status === 'cancelling' || c.status === 'cancelled', `batches.cancel -> ${c.status}`);
    seen.add(c.status);
  }
}
const want = { complete: 'completed', cancel: 'cancelled', expire: 'expired' }[mode];
check(cur.status === want, `batch ended ${cur.status} (want ${want}); seen ${[...seen].join(',')}`);
if (mode === 'cancel') check(seen.has('cancelling'), 'cancelling was visible before cancelled');

// List, with pagination by `after`.
const listed = [];
for await (const x of a.batches.list({ limit: 1 })) listed.push(x.id);
check(listed.includes(batch.id), `batches.list (limit 1, paged by after) has the batch (${listed.length} listed)`);
const listedB = [];
for await (const x of b.batches.list()) listedB.push(x.id);
check(!listedB.includes(batch.id), "another tenant's list does not show it");

// The files.
const read = async (id) => id ? (await (await a.files.content(id)).text()).split('\n').filter((l) => l).map((l) => JSON.parse(l)) : [];
const okLines = await read(cur.output_file_id);
const errLines = await read(cur.error_file_id);
const where = new Map();
let dup = 0;
for (const l of okLines) { if (where.has(l.custom_id)) dup++; where.set(l.custom_id, 'output'); }
for (const l of errLines) { if (l.custom_id !== null && where.has(l.custom_id)) dup++; if (l.custom_id !== null) where.set(l.custom_id, 'error'); }
check(dup === 0, `no custom_id twice over both files (${dup})`);
check(ids.every((id) => where.has(id)), 'every valid line is in one of the files');
check(okLines.length + errLines.length === lines, `output ${okLines.length} + error ${errLines.length} = ${lines} lines`);
check(cur.request_counts.completed === okLines.length, `request_counts.completed ${cur.request_counts.completed} = output lines`);
check(cur.request_counts.failed === errLines.length, `request_counts.failed ${cur.request_counts.failed} = error lines`);
check(cur.request_counts.total === lines, 'request_counts.total = lines');
const shapeOk = okLines.every((l) => l.id.startsWith('batch_req_') && l.error === null &&
  l.response.status_code === 200 && l.response.request_id === `${batch.id}:${l.custom_id}` &&
  l.response.body.object === 'chat.completion' && typeof l.response.body.choices[0].message.content === 'string' &&
  Number.isInteger(l.response.body.usage.total_tokens));
check(shapeOk, 'output lines: {id, custom_id, response: {status_code 200, request_id, body: chat.completion with usage}, error: null}');
const errShape = errLines.every((l) => (l.response === null && l.error && l.error.code) ||
  (l.response && l.response.status_code >= 400 && l.response.body.error.message));
check(errShape, 'error lines: a response with an error body, or error {code, message}');
const invalid = errLines.filter((l) => l.response === null).length;
const providerFailed = errLines.filter((l) => l.response && l.response.status_code === 500).length;
const stopped = errLines.filter((l) => l.response && l.response.status_code === 499).length;
if (mode === 'complete') {
  check(invalid === bad.length, `the ${bad.length} bad lines are in the error file with error.code (${invalid})`);
  check(providerFailed > 0, `lines whose provider failed after all retries are in the error file (${providerFailed})`);
}
const fileObj = cur.output_file_id ? await a.files.retrieve(cur.output_file_id) : null;
check(!cur.output_file_id || fileObj.purpose === 'batch_output', 'output file purpose batch_output');
const del = await a.files.del(file.id);
check(del.deleted === true, 'files.del');
check(await statusOf(a.files.retrieve(file.id)) === 404, 'a deleted file answers 404');
fs.unlinkSync(path);
console.log('summary=' + JSON.stringify({ batch_id: batch.id, status: cur.status,
  completed: okLines.length, failed: errLines.length, invalid, provider_failed: providerFailed,
  stopped, failures, seconds: (Date.now() - t0) / 1000 }));
process.exit(failures ? 1 : 0);
