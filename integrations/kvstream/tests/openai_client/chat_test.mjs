// The official `openai` npm package against `kvstream serve` on a loopback port (a CTest test; the
// fixture before it runs `npm ci` against the committed package-lock.json).
//
// Usage: node chat_test.mjs --kvstream BIN --model M --tokenizer T
//
// 1. /v1/models lists the model.
// 2. A multi-turn chat as stateless clients send it (the whole conversation every turn): every
//    answer equals /v1/completions on the same ChatML prompt (stories260K has no chat template,
//    so the server renders ChatML, as llama.cpp does), and each turn reuses every token the
//    previous one left in the session but its last, not yet fed.
// 3. A streamed turn: the role first, content deltas, finish_reason, a usage chunk; its text
//    equals the same request answered whole, from scratch.
// 4. Bad input: the SDK's BadRequestError with the offending param; a bodyless POST says what is
//    missing. SIGTERM stops the server with status 0.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import OpenAI from 'openai';

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function check(cond, message) {
  if (!cond) fail(message);
}

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i + 1 < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  for (const k of ['kvstream', 'model', 'tokenizer']) check(out[k], `missing --${k}`);
  return out;
}

// kvstream serve on 127.0.0.1, port chosen by the kernel (read from its JSON startup line).
async function startServer(a, stateDir) {
  const proc = spawn(a.kvstream, ['serve', '--model', a.model, '--tokenizer', a.tokenizer, '--host', '127.0.0.1',
                                  '--port', '0', '--pool-mib', '8', '--state-dir', stateDir],
                     { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal, stderr })));
  const line = await new Promise((resolve) => {
    const lines = createInterface({ input: proc.stdout });
    lines.once('line', resolve);
    proc.once('exit', () => resolve(null));
  });
  if (!line) fail(`serve did not start: ${(await exited).stderr}`);
  const event = JSON.parse(line);
  check(event.event === 'listening' && event.host === '127.0.0.1', `startup line ${line}`);
  return { proc, exited, base: `http://127.0.0.1:${event.port}` };
}

// ChatML, as the server renders a conversation for a model without a chat template.
const chatml = (messages) =>
  messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('') + '<|im_start|>assistant\n';

const a = args();
const stateDir = mkdtempSync(join(tmpdir(), 'kvstream-openai-'));
const server = await startServer(a, stateDir);
try {
  const client = new OpenAI({ baseURL: `${server.base}/v1`, apiKey: 'unused', maxRetries: 0 });

  const models = await client.models.list();
  check(models.data.length === 1 && models.data[0].id === 'stories260K', `models ${JSON.stringify(models.data)}`);
  const model = models.data[0].id;

  // Answers equal /v1/completions on the rendered prompt (same tokens, greedy).
  const completion = async (messages, maxTokens) =>
    (await client.completions.create({ model, prompt: chatml(messages), max_tokens: maxTokens, temperature: 0 }))
      .choices[0].text;

  const messages = [{ role: 'system', content: 'You tell short stories.' },
                    { role: 'user', content: 'Once upon a time' }];
  let previous = null;
  for (const [turn, next] of ['Lily went to the park.', 'What did she see?', null].entries()) {
    const answer = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0 });
    const choice = answer.choices[0];
    console.log(`turn ${turn + 1}: ${JSON.stringify(choice.message.content)} (usage ${JSON.stringify(answer.usage)})`);
    check(answer.object === 'chat.completion' && choice.message.role === 'assistant', `answer ${JSON.stringify(answer)}`);
    check(choice.finish_reason === 'length', `turn ${turn + 1} finish_reason ${choice.finish_reason}`);
    check(choice.message.content === await completion(messages, 24), `turn ${turn + 1}: not the completion's text`);
    const cached = answer.usage.prompt_tokens_details.cached_tokens;
    const want = previous ? previous.usage.prompt_tokens + previous.usage.completion_tokens - 1 : 0;
    check(cached === want, `turn ${turn + 1}: cached_tokens ${cached}, expected ${want}`);
    check(answer.usage.total_tokens === answer.usage.prompt_tokens + answer.usage.completion_tokens, 'total_tokens');
    previous = answer;
    messages.push(choice.message);
    if (next) messages.push({ role: 'user', content: next });
  }

  // A streamed turn with usage; then the same request answered whole (nothing left to reuse: the
  // session went on) must say the same.
  messages.push({ role: 'user', content: 'Tell me more.' });
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 24, temperature: 0.8, seed: 42, stream: true, stream_options: { include_usage: true },
  });
  let streamed = '', role = null, finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    ++chunks;
    check(chunk.object === 'chat.completion.chunk', `chunk ${JSON.stringify(chunk)}`);
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length === 0) continue;
    const delta = chunk.choices[0].delta;
    if (delta.role) role = delta.role;
    if (delta.content) streamed += delta.content;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  console.log(`streamed: ${JSON.stringify(streamed)} in ${chunks} chunks (usage ${JSON.stringify(usage)})`);
  check(role === 'assistant' && finish === 'length' && chunks > 10, `stream role ${role}, finish ${finish}, ${chunks} chunks`);
  const reused = previous.usage.prompt_tokens + previous.usage.completion_tokens - 1;
  check(usage && usage.prompt_tokens_details.cached_tokens === reused, `streamed cached_tokens, expected ${reused}`);
  const whole = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0.8, seed: 42 });
  check(whole.usage.prompt_tokens_details.cached_tokens === 0, 'the repeated request found a session');
  check(whole.choices[0].message.content === streamed, 'streamed and whole answers differ');

  // Bad input: OpenAI's error shape, through the SDK.
  try {
    await client.chat.completions.create({ model, messages: [] });
    fail('an empty messages array was accepted');
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'messages', `error ${e}`);
    console.log(`empty messages: ${e.status} ${e.message}`);
  }
  const bodyless = await fetch(`${server.base}/v1/chat/completions`, { method: 'POST' });
  const text = await bodyless.text();
  check(bodyless.status === 400 && text.includes("'messages'"), `bodyless POST: ${bodyless.status} ${text}`);
  const session = await fetch(`${server.base}/v1/sessions`, { method: 'POST' });
  check(session.status === 201, `bodyless POST /v1/sessions: ${session.status}`);
} finally {
  server.proc.kill('SIGTERM');
  const { code, signal, stderr } = await server.exited;
  rmSync(stateDir, { recursive: true, force: true });
  if (code !== 0) fail(`serve exited with ${code ?? signal}: ${stderr}`);
}
console.log('PASS');
