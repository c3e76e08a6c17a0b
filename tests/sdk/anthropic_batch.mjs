// anthropic_batch.mjs - drives gantry-api's /v1/messages/batches with the
// official `@anthropic-ai/sdk` (create, retrieve, list, results, cancel):
// every request has exactly one result by custom_id, request_counts match the
// results. Prints "summary=<json>"; exits 1 on a failure.
import Anthropic from '@anthropic-ai/sdk';

const env = (k) => { if (!process.env[k]) throw new Error(`${k} not set`); return process.env[k]; };
const baseURL = env('GANTRY_API_URL');
const n = Number(process.argv[3] || 1000);
const deadlineMs = Number(process.env.GANTRY_SDK_DEADLINE_MS || 300000);
const a = new Anthropic({ baseURL, apiKey: env('KEY_A'), maxRetries: 0, timeout: 120000 });
const b = new Anthropic({ baseURL, apiKey: env('KEY_B'), maxRetries: 0 });
const revoked = new Anthropic({ baseURL, apiKey: env('KEY_REVOKED'), maxRetries: 0 });
let failures = 0;
const check = (ok, what) => { if (!ok) { failures++; console.error(`FAIL ${what}`); } else console.error(`ok   ${what}`); };
const statusOf = async (p) => { try { await p; return 200; } catch (e) { return e.status ?? -1; } };

const requests = [];
for (let i = 0; i < n; i++) {
  const params = i === 3 ? { model: 'claude-3-5-haiku', max_tokens: 16, messages: [] } // maps to nothing: errored
    : { model: 'claude-3-5-haiku', max_tokens: 16, system: 'Be brief.',
        messages: [{ role: 'user', content: [{ type: 'text', text: `Request ${i}: say hi` }] }] };
  requests.push({ custom_id: `msg-${i}`, params });
}
check(await statusOf(a.messages.batches.create({ requests: [requests[0], requests[0]] })) === 400,
      'a duplicate custom_id is refused at create (400)');
const batch = await a.messages.batches.create({ requests });
check(batch.type === 'message_batch' && batch.processing_status === 'in_progress', `create: ${batch.id}`);
check(await statusOf(b.messages.batches.retrieve(batch.id)) === 404, "another tenant's key: 404");
check(await statusOf(revoked.messages.batches.retrieve(batch.id)) === 401, 'revoked key: 401');
let cur = batch;
const t0 = Date.now();
while (cur.processing_status !== 'ended') {
  if (Date.now() - t0 > deadlineMs) { check(false, 'batch ended in time'); break; }
  await new Promise((r) => setTimeout(r, 200)); // a client's poll interval
  cur = await a.messages.batches.retrieve(batch.id);
}
check(cur.processing_status === 'ended' && cur.ended_at && cur.results_url, 'ended with results_url');
const listed = [];
for await (const x of a.messages.batches.list({ limit: 2 })) listed.push(x.id);
check(listed.includes(batch.id), 'list has the batch');
const seen = new Map();
let dup = 0;
for await (const r of await a.messages.batches.results(batch.id)) {
  if (seen.has(r.custom_id)) dup++;
  seen.set(r.custom_id, r.result);
}
check(dup === 0 && seen.size === n, `one result per custom_id (${seen.size}, ${dup} repeated)`);
const count = (t) => [...seen.values()].filter((r) => r.type === t).length;
const c = cur.request_counts;
check(c.succeeded === count('succeeded') && c.errored === count('errored') && c.processing === 0 &&
      c.canceled === count('canceled') && c.expired === count('expired'), `request_counts match ${JSON.stringify(c)}`);
check(seen.get('msg-3')?.type === 'errored' && seen.get('msg-3').error.error.type === 'invalid_request_error',
      'params that map to no request: errored, invalid_request_error');
const ok = [...seen.values()].filter((r) => r.type === 'succeeded');
check(ok.every((r) => r.message.type === 'message' && r.message.content[0].type === 'text' &&
      Number.isInteger(r.message.usage.input_tokens)), 'succeeded results carry a message with usage');
check(await statusOf(a.messages.batches.cancel(batch.id)) === 200, 'cancel of an ended batch answers the batch');
console.log('summary=' + JSON.stringify({ batch_id: batch.id, processing_status: cur.processing_status,
  succeeded: count('succeeded'), errored: count('errored'), failures }));
process.exit(failures ? 1 : 0);
