// The web client in Debian's headless Chromium against the real server binary: two (and three)
// people in separate browser contexts, end to end. Screenshots go to test-artifacts/screenshots.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const ROOT = new URL('../../', import.meta.url).pathname;
const SHOTS = join(ROOT, 'test-artifacts', 'screenshots');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const BIN = process.env.EPHEMERA_BIN || join(ROOT, 'target', 'debug', 'ephemera');
const CLI = process.env.EPHEMERA_CLI || join(ROOT, 'target', 'debug', 'ephemera-cli');

/** The environment without MONGODB_URI: these tests use the embedded store. */
function withoutMongo(env) {
  const { MONGODB_URI: _, ...rest } = env;
  return rest;
}

let server;
let base;
let browser;

/** The server binary on a free port with the embedded store; resolves with it and its URL. */
async function startServer(extra = []) {
  const child = spawn(BIN, [
    '--bind', '127.0.0.1:0', '--data-dir', mkdtempSync(join(tmpdir(), 'ephemera-web-')),
    '--static-dir', join(ROOT, 'static'), '--argon2-memory-kib', '1024', '--argon2-iterations', '1', ...extra,
  ], { env: { ...withoutMongo(process.env), RUST_LOG: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] });
  const port = await new Promise((resolve, reject) => {
    let seen = '';
    child.stderr.on('data', (chunk) => {
      seen += chunk;
      const m = seen.match(/listening on port (\d+)/);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}: ${seen}`)));
  });
  return { server: child, base: `http://127.0.0.1:${port}` };
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium is needed at ${CHROMIUM}: apt-get install chromium (scripts/test does)`);
  assert.ok(existsSync(BIN), `the server binary is needed at ${BIN}: cargo build (scripts/test does)`);
  mkdirSync(SHOTS, { recursive: true });
  ({ server, base } = await startServer());
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic'],
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
});

/**
 * A page in its own browser context, recording every WebSocket frame it sends or receives, and
 * every console error, uncaught exception and failed request (`problems`).
 */
async function person(viewport = { width: 1200, height: 850 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const frames = [];
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  // A request the page itself dropped by navigating away (the lobby's, say) is not a failure.
  page.on('requestfailed', (r) => { if (r.failure()?.errorText !== 'net::ERR_ABORTED') problems.push(`failed ${r.url()}: ${r.failure()?.errorText}`); });
  page.on('websocket', (ws) => {
    ws.on('framesent', (f) => frames.push(String(f.payload)));
    ws.on('framereceived', (f) => frames.push(String(f.payload)));
  });
  page.on('dialog', (d) => d.accept());
  page.on('pageerror', (e) => console.error('page error:', e));
  return { context, page, frames, problems };
}

async function connected(page) {
  await page.locator('#conn-state[data-state=online]').waitFor({ timeout: 20000 });
}

const messages = (page) => page.locator('#messages');

const DESKTOP = { width: 1200, height: 850 };
const PHONE = { width: 390, height: 844 };

/** Opens the room's link (on the server at `at`) and joins under `name`. */
async function enter(p, roomId, key, name, at = base) {
  await p.page.goto(`${at}/r/${roomId}#key=${encodeURIComponent(key)}`);
  await p.page.fill('#join-name', name);
  await p.page.click('#panel-join button[type=submit]');
  await connected(p.page);
}

const AXE = readFileSync(join(ROOT, 'tests', 'browser', 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

/**
 * Runs axe-core on the page as it is (injected through the DevTools protocol, so the page's
 * strict CSP stays as it is) and fails on any serious or critical violation.
 */
async function accessible(page, what) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE);
  const found = await page.evaluate(async () => {
    const { violations } = await window.axe.run(document, { resultTypes: ['violations'] });
    return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ')) }));
  });
  assert.deepEqual(found, [], `${what}: ${JSON.stringify(found, null, 1)}`);
}

/** axe in light and in dark, with a screenshot of each, named `${what}-${size}-${scheme}.png`. */
async function checkBothSchemes(page, what, size) {
  for (const colorScheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme });
    await accessible(page, `${what} at ${size} width, ${colorScheme}`);
    await page.screenshot({ path: join(SHOTS, `${what}-${size}-${colorScheme}.png`) });
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

/**
 * Creates a room through the API of the server at `at` from `page`, deriving its proof with the
 * web client's own crypto.
 */
async function createRoom(page, roomId, key, adminPassword, at = base) {
  await page.goto(at);
  await page.evaluate(async ({ roomId, key, adminPassword }) => {
    const c = await import('/js/crypto.js');
    const { auth } = await c.deriveRoomSecrets(roomId, key);
    const r = await fetch('/api/rooms', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ room_id: roomId, auth, admin_password: adminPassword }),
    });
    if (r.status !== 201) throw new Error(await r.text());
  }, { roomId, key, adminPassword });
}

test('key derivation, envelopes, DM keys and final closes match the contract in the browser', async () => {
  const { page, context } = await person();
  await page.goto(base);
  const got = await page.evaluate(async () => {
    const c = await import('/js/crypto.js');
    const rows = [];
    for (const [id, key] of [['team-42', 'correct horse'], ['Zq3xv9LmN0pQrS7t', 'k9JvT2mQ8xR4wY6zB1nC5a']]) {
      const s = await c.deriveRoomSecrets(id, key);
      rows.push({ master: c.hex(s.master), auth: s.auth, enc: c.hex(s.enc) });
    }
    const first = await c.deriveRoomSecrets('team-42', 'correct horse');
    const iv = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    const text = '{"from":"alice","kind":"text","text":"hi"}';
    const envelope = await c.seal(await c.aesKey(first.enc), 'team-42', JSON.parse(text), iv);
    const opened = await c.open(await c.aesKey(first.enc), 'team-42', envelope);
    const alicePub = c.b64uDecode('BCkZ3Ha5Z8u1e4O0XudXdtC1aZjcJURwNRitr4tzqEbv-BDdyvU46KYcZ3FYekJazDGXsRrG9ghsCwyfVOm6F1I');
    const d = new Uint8Array(32);
    d.set([0x11, 0x22, 0x10, 0xf4, 0x7d, 0xe9, 0x81, 0x15], 24);
    const alicePriv = await crypto.subtle.importKey('jwk', {
      kty: 'EC', crv: 'P-256', d: c.b64uEncode(d), x: c.b64uEncode(alicePub.slice(1, 33)), y: c.b64uEncode(alicePub.slice(33)),
    }, { name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
    const bob = 'BLy5ei9_ep2rpo8OBY4a_ZNaLnIG40GMl49f7SuarDnezTyp-Tcv7rKuO-a8gil0u5aazGuhOoUFZkrQPR4-NPU';
    const dm = await c.dmKeyRaw(alicePriv, bob, 'team-42', 'bob', 'alice');
    const alice = c.b64uEncode(alicePub);
    const safety = [
      await c.safetyCode('team-42', ['alice', alice], ['bob', bob]),
      await c.safetyCode('team-42', ['bob', bob], ['alice', alice]),
    ];
    // The closes after which a client does not come back, by the contract's rule.
    const p = await import('/js/protocol.js');
    const final = [1000, 1001, 1006, 1011, 1013, 4400, 4401, 4403, 4404, 4409, 4410, 4413, 4422, 4429, 4503]
      .filter((code) => p.isFinal(code));
    return { rows, ct: envelope.ct, iv: envelope.iv, opened, secret: c.hex(dm.secret), dmKey: c.hex(dm.key), final, safety };
  });
  assert.deepEqual(got.rows, [
    { master: '06f708ad03a0ad27d9dccb18ec02343b857ef206182c271972d1df654719d8d1', auth: 'QI2MuN_h4umuzgDv7fuYPzUPs2a7-rq_52HxKATzSZk', enc: '515b6b9575f599f3b175b0dcda5c6adf051782b81f44e8ac0a82c9a85337b02d' },
    { master: 'bfef1c47b50d4ae3293540c7d1f8b6f36d2ce34697f1ac0e353d7f40573453c0', auth: 'czo1YZT6tOwsXQabE13Ve_8zLw5hZqr87Hj0xUDxq44', enc: '4a4c53dc62bdf8b7c03cc2397b6f7939c7ed31618034e976e9576fc7f2c8650c' },
  ]);
  assert.equal(got.iv, 'AAECAwQFBgcICQoL');
  assert.equal(got.ct, 'hcNq8QWyiXYg3tLp_Dg5V8vuOYUYaaNmUgmXrOMdl4dF19ggyc7DvussTXQ9GPimC2h-HpVgz_Vg-A');
  assert.deepEqual(got.opened, { from: 'alice', kind: 'text', text: 'hi' });
  assert.equal(got.secret, 'a2f8fe9b57581bbb78d34e77b3fa8b088039c228a1559ef435b60de380505488');
  assert.equal(got.dmKey, '003564b11ce1bf34b72ec2f06e95f4cce851d03f7ed28d9e2d3dcb18d8ebad4d');
  assert.deepEqual(got.safety, ['01381 76559 28245 28596 44131 17923', '01381 76559 28245 28596 44131 17923']);
  assert.deepEqual(got.final, [1000, 4400, 4401, 4403, 4404, 4409, 4410, 4413, 4422, 4429, 4503]);
  await context.close();
});

// A 2×2 red PNG.
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMAAAA4gAQdE5rYpAAAAAElFTkSuQmCC', 'base64');

test('two people create, share, chat, DM, send an image, unsend, kick and delete, end to end', async () => {
  const alice = await person();
  const bob = await person();
  const carol = await person({ width: 390, height: 844 });

  // Alice creates a listed room and gets the share link.
  await alice.page.goto(base);
  await alice.page.fill('#create-room', 'browser-room');
  await alice.page.fill('#create-admin', 'admin-password-1');
  await alice.page.fill('#create-title', 'Browser test');
  await alice.page.check('#create-listed');
  await alice.page.click('#panel-create button[type=submit]');
  await alice.page.locator('#create-result').waitFor();
  const link = await alice.page.inputValue('#share-link');
  assert.match(link, /\/r\/browser-room#key=[A-Za-z0-9_-]{22}$/);
  await alice.page.fill('#create-name', 'alice');
  await alice.page.click('#create-enter');
  await connected(alice.page);
  await messages(alice.page).getByText('Welcome, alice').waitFor();

  // Bob opens the link: the join form is filled in but for his name.
  await bob.page.goto(link);
  assert.equal(await bob.page.inputValue('#join-room'), 'browser-room');
  await bob.page.fill('#join-name', 'bob');
  await bob.page.click('#panel-join button[type=submit]');
  await connected(bob.page);
  await messages(alice.page).getByText('bob joined').waitFor();
  await messages(bob.page).getByText('Welcome, bob').waitFor();

  // Both ways.
  await alice.page.fill('#compose', 'hello from alice 🌍');
  await alice.page.press('#compose', 'Enter');
  await messages(bob.page).getByText('hello from alice 🌍').waitFor();
  await bob.page.fill('#compose', 'hi alice, bob here');
  await bob.page.press('#compose', 'Enter');
  await messages(alice.page).getByText('hi alice, bob here').waitFor();
  assert.equal(await messages(alice.page).locator('.msg.own').count(), 1);

  // Carol joins on a phone-sized screen; Bob sends Alice a DM that Carol never sees.
  await carol.page.goto(link);
  await carol.page.fill('#join-name', 'carol');
  await carol.page.click('#panel-join button[type=submit]');
  await connected(carol.page);
  await messages(bob.page).getByText('carol joined').waitFor();
  await bob.page.click('button[aria-label="Private message to alice"]');
  await bob.page.fill('#compose', 'a secret for alice only');
  await bob.page.press('#compose', 'Enter');
  // Alice's conversation list gains Bob, with one unread message; the room stays on screen
  // until she opens it, and then the composer says it writes to Bob alone.
  const bobConv = alice.page.locator('#conv-list .conv[data-conv="bob"]');
  await bobConv.locator('.unread', { hasText: '1' }).waitFor();
  assert.equal(await messages(alice.page).getByText('a secret for alice only').isVisible(), false);
  await bobConv.click();
  await messages(alice.page).getByText('a secret for alice only').waitFor();
  assert.match(await alice.page.textContent('#compose-to-text'), /Private to bob/);
  assert.equal(await bobConv.locator('.unread').count(), 0);
  assert.equal(await messages(alice.page).getByText('hi alice, bob here').isVisible(), false);
  await alice.page.click('#conv-list .conv[data-conv=""]');
  await messages(alice.page).getByText('hi alice, bob here').waitFor();
  assert.match(await bob.page.textContent('#compose-to-text'), /Private to alice/);
  await bob.page.click('#dm-cancel');
  assert.match(await bob.page.textContent('#compose-to-text'), /To everyone in the room/);
  await bob.page.fill('#compose', 'back to everyone');
  await bob.page.press('#compose', 'Enter');
  await messages(carol.page).getByText('back to everyone').waitFor();
  assert.equal(await messages(carol.page).getByText('a secret for alice only').count(), 0);

  // An image, shown inline at the other end.
  await alice.page.setInputFiles('#file-input', { name: 'red.png', mimeType: 'image/png', buffer: PNG });
  const img = messages(bob.page).locator('img[alt="red.png"]');
  await img.waitFor();
  assert.equal(await img.evaluate(async (i) => { await i.decode(); return i.naturalWidth; }), 2);

  // A message sealed under another key (a member with a broken client, or a forger) shows as
  // undecryptable, never as garbage.
  const rogue = await person();
  await rogue.page.goto(base);
  await rogue.page.evaluate(async ({ roomKey }) => {
    const c = await import('/js/crypto.js');
    const { auth: proof } = await c.deriveRoomSecrets('browser-room', roomKey);
    const wrongKey = await c.aesKey(crypto.getRandomValues(new Uint8Array(32)));
    const body = await c.seal(wrongKey, 'browser-room', { from: 'mallory', kind: 'text', text: 'garbage' });
    await new Promise((resolve) => {
      const ws = new WebSocket(`ws://${location.host}/ws/browser-room`);
      ws.onopen = () => ws.send(JSON.stringify({ type: 'join', name: 'mallory', auth: proof }));
      ws.onmessage = (e) => {
        if (JSON.parse(e.data).type === 'welcome') {
          ws.send(JSON.stringify({ type: 'send', txn: '1', body }));
          setTimeout(() => { ws.close(); resolve(); }, 300);
        }
      };
    });
  }, { roomKey: new URL(link).hash.slice(5) });
  await messages(bob.page).getByText('This message could not be decrypted').waitFor();
  assert.equal(await messages(bob.page).getByText('garbage').count(), 0);
  await rogue.context.close();

  // Fingerprints match across browsers.
  const fpA = await alice.page.textContent('#room-fp');
  assert.equal(await bob.page.textContent('#room-fp'), fpA);
  assert.match(fpA, /^[0-9a-f]{4} [0-9a-f]{4} [0-9a-f]{4}$/);

  const home = await person({ width: 390, height: 844 });
  await home.page.goto(base);
  await home.page.getByText('Browser test', { exact: true }).waitFor();
  await home.context.close();

  // Unsend removes it on both sides.
  await messages(alice.page).locator('.msg.own', { hasText: 'hello from alice' }).getByRole('button', { name: 'Unsend this message' }).click();
  await messages(bob.page).getByText('A message was unsent by alice.').waitFor();
  await messages(alice.page).getByText('You unsent a message.').waitFor();
  assert.equal(await messages(bob.page).getByText('hello from alice 🌍').count(), 0);
  assert.equal(await messages(alice.page).getByText('hello from alice 🌍').count(), 0);

  // The admin removes Carol, after saying so in the page's own dialog (Cancel first: nothing).
  await alice.page.click('button[aria-label="Remove carol"]');
  await alice.page.click('#confirm-cancel');
  await alice.page.click('button[aria-label="Remove carol"]');
  await alice.page.click('#confirm-ok');
  await carol.page.locator('#room-notice', { hasText: 'removed' }).waitFor();
  await messages(bob.page).getByText('carol was removed by alice').waitFor();
  // Carol's room is over, and looks it: nothing to send, nothing to unsend, one way home, and
  // the conversation still there to read.
  assert.equal(await carol.page.isDisabled('#compose'), true);
  assert.equal(await carol.page.isDisabled('#composer button[type=submit]'), true);
  assert.equal(await messages(carol.page).locator('.unsend').count(), 0);
  assert.equal(await carol.page.isVisible('#home-btn'), true);
  assert.equal(await carol.page.isVisible('#leave-btn'), false);
  assert.ok(await messages(carol.page).getByText('back to everyone').isVisible());
  await carol.page.screenshot({ path: join(SHOTS, 'room-kicked-phone.png'), fullPage: true });

  // The admin deletes the room; Bob is told.
  await alice.page.click('#delete-room-btn');
  await alice.page.click('#confirm-ok');
  await bob.page.locator('#room-notice', { hasText: 'deleted' }).waitFor();
  assert.equal(await bob.page.isDisabled('#compose'), true);
  assert.equal(await messages(bob.page).locator('.unsend, .act').count(), 0);

  // Nothing anyone said crossed the wire in the clear.
  const wire = [...alice.frames, ...bob.frames, ...carol.frames].join('\n');
  assert.ok(wire.includes('"type":"send"'), 'frames were captured');
  for (const secret of ['hello from alice', 'hi alice, bob here', 'a secret for alice only', 'back to everyone', 'red.png']) {
    assert.ok(!wire.includes(secret), `"${secret}" crossed the wire in plaintext`);
  }
  assert.deepEqual([...alice.problems, ...bob.problems, ...carol.problems], []);
  for (const p of [alice, bob, carol]) await p.context.close();
});

/** Runs ephemera-cli to completion; resolves with its exit code and output. */
function runCli(args, env) {
  return new Promise((resolve) => {
    const child = spawn(CLI, ['--server', base, ...args], { env: { ...process.env, ...env } });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('exit', (code) => resolve({ code, out }));
  });
}

test('a terminal and a browser in one room read each other, room messages and DMs', async (t) => {
  assert.ok(existsSync(CLI), `ephemera-cli is needed at ${CLI}: cargo build --bins (scripts/test does)`);
  const key = 'interop key, with spaces';
  const env = { EPHEMERA_ROOM_KEY: key, EPHEMERA_ADMIN_PASSWORD: 'interop-admin-1' };
  const created = await runCli(['create', '--room', 'interop-room'], env);
  assert.equal(created.code, 0, created.out);
  const link = created.out.split('\n').find((l) => l.includes('/r/interop-room#key='));
  assert.ok(link, created.out);

  const listener = spawn(CLI, ['--server', base, 'listen', 'interop-room', '--name', 'term', '--json'], { env: { ...process.env, ...env } });
  t.after(() => listener.kill('SIGTERM'));
  const events = [];
  let buffered = '';
  listener.stdout.on('data', (d) => {
    buffered += d;
    const lines = buffered.split('\n');
    buffered = lines.pop();
    for (const line of lines) if (line.trim()) events.push(JSON.parse(line));
  });
  const heard = async (pick) => {
    for (let i = 0; i < 200; i++) {
      const found = events.find(pick);
      if (found) return found;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`not heard; events: ${JSON.stringify(events)}`);
  };
  await heard((e) => e.type === 'bot' && e.event === 'welcome');

  const web = await person();
  await web.page.goto(link.trim());
  assert.equal(await web.page.inputValue('#join-key'), key);
  await web.page.fill('#join-name', 'web');
  await web.page.click('#panel-join button[type=submit]');
  await connected(web.page);
  assert.equal(await web.page.textContent('#room-fp') !== '', true);

  await web.page.fill('#compose', 'hello terminal, from the browser');
  await web.page.press('#compose', 'Enter');
  const message = await heard((e) => e.type === 'message' && e.from === 'web');
  assert.equal(message.text, 'hello terminal, from the browser');
  assert.equal(message.to, null);

  const sent = await runCli(['send', 'interop-room', '--name', 'term2', 'hello browser, from a terminal'], env);
  assert.equal(sent.code, 0, sent.out);
  await messages(web.page).getByText('hello browser, from a terminal').waitFor();

  await web.page.click('button[aria-label="Private message to term"]');
  await web.page.fill('#compose', 'a private word for the terminal');
  await web.page.press('#compose', 'Enter');
  const dm = await heard((e) => e.type === 'message' && e.to === 'term');
  assert.equal(dm.text, 'a private word for the terminal');
  assert.equal(dm.from, 'web');

  // The new kinds, from the browser to the terminal: a reply, a reaction, an edit.
  await web.page.click('#dm-cancel');
  const terminalSeq = Number(await messages(web.page).locator('.msg', { hasText: 'hello browser, from a terminal' }).getAttribute('data-seq'));
  const fromTerminal = messages(web.page).locator(`.msg[data-seq="${terminalSeq}"]`);
  await fromTerminal.getByRole('button', { name: "Reply to term2's message" }).click();
  await web.page.fill('#compose', 'and hello back');
  await web.page.press('#compose', 'Enter');
  const reply = await heard((e) => e.type === 'message' && e.text === 'and hello back');
  assert.equal(reply.reply_to, terminalSeq);
  await fromTerminal.getByRole('button', { name: "React to term2's message" }).click();
  await web.page.getByRole('button', { name: 'React with 🎉' }).click();
  const reaction = await heard((e) => e.type === 'reaction');
  assert.deepEqual([reaction.target, reaction.emoji, reaction.on, reaction.from], [terminalSeq, '🎉', true, 'web']);
  const mine = messages(web.page).locator('.msg.own', { hasText: 'hello terminal, from the browser' });
  await mine.getByRole('button', { name: 'Edit your message' }).click();
  await web.page.fill('#compose', 'hello terminal, edited');
  await web.page.press('#compose', 'Enter');
  const edit = await heard((e) => e.type === 'edit');
  assert.equal(edit.text, 'hello terminal, edited');
  assert.equal(edit.target, message.seq);

  // And from a terminal to the browser: a reply, a reaction and an edit, typed as slash commands.
  const tty = terminal(t, 'interop-room', 'tty', env);
  await messages(web.page).getByText('tty joined').waitFor();
  await say(web.page, 'over to the terminal');
  const [, askedSeq] = await tty.wait(/#(\d+)\] web: over to the terminal/);
  tty.type(`/reply ${askedSeq} answered from a terminal`);
  const answer = messages(web.page).locator('.msg', { hasText: 'answered from a terminal' });
  await answer.locator('.quote', { hasText: 'web: over to the terminal' }).waitFor();
  tty.type(`/react ${askedSeq} 🎉`);
  await messages(web.page).locator(`.msg[data-seq="${askedSeq}"] .chip`, { hasText: '🎉 1' }).waitFor();
  tty.type('typed in a terminal');
  const [, typedSeq] = await tty.wait(/#(\d+)\] tty: typed in a terminal/);
  tty.type(`/edit ${typedSeq} edited in a terminal`);
  const typed = messages(web.page).locator(`.msg[data-seq="${typedSeq}"]`);
  await typed.getByText('edited in a terminal').waitFor();
  await typed.locator('.edited').waitFor();

  listener.kill('SIGTERM');
  assert.deepEqual(web.problems, []);
  await web.context.close();
});

test('the home page deletes a room by its admin password, and says why when it cannot', async () => {
  const admin = await person();
  await admin.page.goto(base);
  await admin.page.fill('#create-room', 'to-delete');
  await admin.page.fill('#create-admin', 'delete-me-please');
  await admin.page.click('#panel-create button[type=submit]');
  await admin.page.locator('#create-result').waitFor();

  await admin.page.click('#tab-delete');
  await admin.page.fill('#delete-room', 'to-delete');
  await admin.page.fill('#delete-admin', 'not the password');
  await admin.page.click('#panel-delete button[type=submit]');
  await admin.page.locator('#delete-error', { hasText: 'wrong' }).waitFor();

  await admin.page.fill('#delete-admin', 'delete-me-please');
  await admin.page.click('#panel-delete button[type=submit]');
  await admin.page.locator('#delete-done', { hasText: 'deleted' }).waitFor();

  // Keyboard: the tabs move with the arrow keys.
  await admin.page.focus('#tab-delete');
  await admin.page.keyboard.press('ArrowLeft');
  assert.equal(await admin.page.getAttribute('#tab-join', 'aria-selected'), 'true');
  assert.equal(await admin.page.isVisible('#panel-join'), true);
  await admin.context.close();
});

test('the key leaves the address bar once read, and no member can slip chunks into another\'s file', async () => {
  const key = 'chunk test key';
  const bob = await person();
  await createRoom(bob.page, 'chunk-room', key, 'chunk-admin-1');

  await bob.page.goto(`${base}/r/chunk-room#key=${encodeURIComponent(key)}`);
  assert.equal(await bob.page.inputValue('#join-key'), key);
  assert.equal(await bob.page.evaluate(() => location.href), `${base}/r/chunk-room`);
  await bob.page.fill('#join-name', 'bob');
  await bob.page.click('#panel-join button[type=submit]');
  await connected(bob.page);

  // Alice sends a two-chunk file; Mallory, who read its first chunk, sends a second chunk of her
  // own under the same id before Alice's second chunk arrives.
  const sockets = await person();
  await sockets.page.goto(base);
  await sockets.page.evaluate(async ({ key }) => {
    const c = await import('/js/crypto.js');
    const room = 'chunk-room';
    const { auth, enc } = await c.deriveRoomSecrets(room, key);
    const k = await c.aesKey(enc);
    const open = (name) => new Promise((resolve) => {
      const ws = new WebSocket(`ws://${location.host}/ws/${room}`);
      ws.onopen = () => ws.send(JSON.stringify({ type: 'join', name, auth }));
      ws.onmessage = (e) => { if (JSON.parse(e.data).type === 'welcome') resolve(ws); };
    });
    const alice = await open('alice');
    const mallory = await open('mallory');
    const chunk = async (ws, from, meta, index, text, txn) => {
      const data = c.b64uEncode(new TextEncoder().encode(text));
      const body = await c.seal(k, room, { from, kind: 'file', file: { ...meta, index, total: 2, data } });
      ws.send(JSON.stringify({ type: 'send', txn, body }));
    };
    const pause = () => new Promise((r) => setTimeout(r, 300));
    const id = 'shared-file-id';
    await chunk(alice, 'alice', { id, name: 'report.txt', mime: 'text/plain', size: 8 }, 0, 'GOOD', 'a0');
    await pause();
    await chunk(mallory, 'mallory', { id, name: 'evil.html', mime: 'text/html', size: 8 }, 1, 'EVIL', 'm1');
    await pause();
    await chunk(alice, 'alice', { id, name: 'report.txt', mime: 'text/plain', size: 8 }, 1, 'GOOD', 'a1');
    await pause();
  }, { key });

  const link = messages(bob.page).getByText('Download report.txt');
  await link.waitFor();
  const [download] = await Promise.all([bob.page.waitForEvent('download'), link.click()]);
  assert.equal(download.suggestedFilename(), 'report.txt');
  assert.equal(readFileSync(await download.path(), 'utf8'), 'GOODGOOD');
  assert.equal(await messages(bob.page).getByText('Download evil.html').count(), 0);
  for (const p of [bob, sockets]) await p.context.close();
});

test('a refused join ends with the words for its error code, and no reconnect', async () => {
  const key = 'right key here';
  const eve = await person();
  await createRoom(eve.page, 'refusal-room', key, 'refusal-admin-1');
  await eve.page.goto(`${base}/r/refusal-room#key=${encodeURIComponent('a wrong key')}`);
  await eve.page.fill('#join-name', 'eve');
  await eve.page.click('#panel-join button[type=submit]');
  // The join form stays, with the error next to the key and everything typed kept.
  await eve.page.locator('#join-key-error', { hasText: 'The room key is wrong.' }).waitFor();
  assert.equal(await eve.page.isVisible('#room'), false);
  assert.equal(await eve.page.inputValue('#join-name'), 'eve');
  assert.equal(await eve.page.inputValue('#join-room'), 'refusal-room');
  assert.equal(await eve.page.getAttribute('#join-key', 'aria-invalid'), '');
  await eve.page.waitForTimeout(1500);
  const joins = eve.frames.filter((f) => f.includes('"type":"join"'));
  assert.equal(joins.length, 1, 'a final close is not retried');
  // A name already in the room is told next to the name.
  await eve.page.fill('#join-key', key);
  await eve.page.fill('#join-name', 'eve');
  const other = await person();
  await other.page.goto(`${base}/r/refusal-room#key=${encodeURIComponent(key)}`);
  await other.page.fill('#join-name', 'eve');
  await other.page.click('#panel-join button[type=submit]');
  await connected(other.page);
  await eve.page.click('#panel-join button[type=submit]');
  await eve.page.locator('#join-name-error', { hasText: 'already in the room' }).waitFor();
  await eve.page.screenshot({ path: join(SHOTS, 'join-refused-desktop.png'), fullPage: true });
  await other.context.close();
  await eve.context.close();
});

test('the home page and a room link load without a console error or a failed request', async () => {
  const { page, context } = await person();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`); });
  page.on('requestfailed', (r) => problems.push(`failed ${r.url()}`));
  for (const path of ['/', '/r/no-such-room']) {
    await page.goto(`${base}${path}`);
    await page.waitForLoadState('networkidle');
  }
  assert.deepEqual(problems, []);
  await context.close();
});

test('a reload brings people back into the room quietly, the creator as admin, and Leave forgets', async () => {
  const ann = await person();
  const ben = await person();
  await ann.page.goto(base);
  await ann.page.fill('#create-room', 'reload-room');
  await ann.page.fill('#create-admin', 'reload-admin-1');
  await ann.page.click('#panel-create button[type=submit]');
  await ann.page.locator('#create-result').waitFor();
  const link = await ann.page.inputValue('#share-link');
  await ann.page.fill('#create-name', 'ann');
  await ann.page.click('#create-enter');
  await connected(ann.page);
  // The creator's address is the room's, without its key.
  assert.equal(await ann.page.evaluate(() => location.href), `${base}/r/reload-room`);

  await ben.page.goto(link);
  await ben.page.fill('#join-name', 'ben');
  await ben.page.click('#panel-join button[type=submit]');
  await connected(ben.page);
  await messages(ann.page).getByText('ben joined').waitFor();

  // Both reload. Nobody hears a leave or a join; the creator is still admin.
  await ben.page.reload();
  await connected(ben.page);
  await ann.page.reload();
  await connected(ann.page);
  assert.equal(await ann.page.isVisible('#delete-room-btn'), true);
  assert.equal(await ann.page.isVisible('#room'), true);
  await ann.page.fill('#compose', 'still here after a reload');
  await ann.page.press('#compose', 'Enter');
  await messages(ben.page).getByText('still here after a reload').waitFor();
  await ben.page.waitForTimeout(6000); // past the server's leave grace
  for (const p of [ann, ben]) {
    assert.equal(await messages(p.page).getByText(/ left\.| joined\./).count(), 0);
  }
  // What the tab keeps holds no room key.
  const kept = await ben.page.evaluate(() => sessionStorage.getItem('ephemera.room'));
  assert.ok(kept && !kept.includes(new URL(link).hash.slice(5)), 'the room key is not kept');

  // Leave goes home and forgets: a reload of the room link shows the join form.
  await ben.page.click('#leave-btn');
  await messages(ann.page).getByText('ben left').waitFor();
  await ben.page.goto(`${base}/r/reload-room`);
  await ben.page.locator('#panel-join').waitFor();
  assert.equal(await ben.page.isVisible('#room'), false);
  assert.equal(await ben.page.evaluate(() => sessionStorage.getItem('ephemera.room')), null);
  for (const p of [ann, ben]) await p.context.close();
});

test('"Seen by" counts only the members who were there when the message was sent', async () => {
  const key = 'seen by key';
  const [dee, eli, fay] = [await person(), await person(), await person()];
  await createRoom(dee.page, 'seen-room', key, 'seen-admin-1');
  const enter = async (p, name) => {
    await p.page.goto(`${base}/r/seen-room#key=${encodeURIComponent(key)}`);
    await p.page.fill('#join-name', name);
    await p.page.click('#panel-join button[type=submit]');
    await connected(p.page);
  };
  await enter(dee, 'dee');
  await enter(eli, 'eli');
  await dee.page.fill('#compose', 'before fay came');
  await dee.page.press('#compose', 'Enter');
  await messages(eli.page).getByText('before fay came').waitFor();
  await messages(dee.page).locator('.seen', { hasText: 'Seen by eli' }).waitFor();
  // Fay comes later and reads everything after it: she did not see Dee's message.
  await enter(fay, 'fay');
  await eli.page.fill('#compose', 'welcome fay');
  await eli.page.press('#compose', 'Enter');
  await messages(fay.page).getByText('welcome fay').waitFor();
  await messages(dee.page).getByText('welcome fay').waitFor();
  await dee.page.waitForTimeout(1500);
  assert.equal(await messages(dee.page).locator('.seen').textContent(), 'Seen by eli');
  for (const p of [dee, eli, fay]) await p.context.close();
});

test('replies, reactions, edits, links and disappearing messages between two pages', async () => {
  const key = 'modern chat key';
  const [gil, hal] = [await person(), await person()];
  await createRoom(gil.page, 'modern-room', key, 'modern-admin-1');
  for (const [p, name] of [[gil, 'gil'], [hal, 'hal']]) {
    await p.page.goto(`${base}/r/modern-room#key=${encodeURIComponent(key)}`);
    await p.page.fill('#join-name', name);
    await p.page.click('#panel-join button[type=submit]');
    await connected(p.page);
  }
  await gil.page.fill('#compose', 'plans at https://example.org/plan?x=1.');
  await gil.page.press('#compose', 'Enter');
  await messages(hal.page).locator('.msg', { hasText: 'plans at' }).waitFor();
  const seq = await messages(hal.page).locator('.msg', { hasText: 'plans at' }).getAttribute('data-seq');
  const original = messages(hal.page).locator(`.msg[data-seq="${seq}"]`);
  // The link is a link, opened apart and never previewed.
  const link = original.locator('a[href="https://example.org/plan?x=1"]');
  assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
  assert.equal(await link.getAttribute('target'), '_blank');

  // Hal replies: Gil sees the quote, and it leads to the original.
  await original.getByRole('button', { name: "Reply to gil's message" }).click();
  await hal.page.fill('#compose', 'count me in');
  await hal.page.press('#compose', 'Enter');
  const reply = messages(gil.page).locator('.msg', { hasText: 'count me in' });
  await reply.locator('.quote', { hasText: 'gil: plans at' }).waitFor();

  // Reactions are counted per emoji, and a second press takes one back.
  await original.getByRole('button', { name: "React to gil's message" }).click();
  await hal.page.getByRole('button', { name: 'React with 👍' }).click();
  const gilsOwn = messages(gil.page).locator(`.msg[data-seq="${seq}"]`);
  await gilsOwn.locator('.chip', { hasText: '👍 1' }).waitFor();
  await gilsOwn.locator('.chip', { hasText: '👍 1' }).click();
  await gilsOwn.locator('.chip', { hasText: '👍 2' }).waitFor();
  await gilsOwn.locator('.chip', { hasText: '👍 2' }).click();
  await gilsOwn.locator('.chip', { hasText: '👍 1' }).waitFor();

  // Gil edits his message; Hal sees the new text, marked edited.
  await gilsOwn.getByRole('button', { name: 'Edit your message' }).click();
  assert.equal(await gil.page.inputValue('#compose'), 'plans at https://example.org/plan?x=1.');
  await gil.page.fill('#compose', 'plans moved to noon');
  await gil.page.press('#compose', 'Enter');
  await original.getByText('plans moved to noon').waitFor();
  await original.locator('.edited').waitFor();

  // A disappearing message goes from both pages when its time is up (a 2 s timer here; the
  // composer offers 30 s and more).
  await gil.page.evaluate(() => document.getElementById('ttl').append(new Option('2 s', '2')));
  await gil.page.selectOption('#ttl', '2');
  await gil.page.fill('#compose', 'this will vanish');
  await gil.page.press('#compose', 'Enter');
  await messages(hal.page).getByText('this will vanish').waitFor();
  await gil.page.screenshot({ path: join(SHOTS, 'room-modern-desktop.png'), fullPage: true });
  await messages(hal.page).getByText('this will vanish').waitFor({ state: 'detached', timeout: 10000 });
  await messages(gil.page).getByText('this will vanish').waitFor({ state: 'detached', timeout: 10000 });
  assert.deepEqual([...gil.problems, ...hal.problems], []);
  for (const p of [gil, hal]) await p.context.close();
});

/** Sends a line from the composer. */
async function say(page, text) {
  await page.fill('#compose', text);
  await page.press('#compose', 'Enter');
}

/** An interactive ephemera-cli in a room: lines in, output collected. */
function terminal(t, roomId, name, env) {
  const child = spawn(CLI, ['--server', base, 'join', roomId, '--name', name], { env: { ...process.env, ...env } });
  t.after(() => child.kill('SIGTERM'));
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  return {
    type: (line) => child.stdin.write(`${line}\n`),
    async wait(pattern) {
      for (let i = 0; i < 200; i++) {
        const m = out.match(pattern);
        if (m) return m;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`${pattern} not printed; output: ${out}`);
    },
  };
}

/** The safety code a page shows in its Verify dialog for `name` (the dialog is left open). */
async function safetyCodeShown(page, name) {
  await page.click(`#member-list button[aria-label="Verify ${name}"]`);
  await page.locator('#verify-dialog[open]').waitFor();
  return page.textContent('#verify-code');
}

test('room options from the Create form: a one-to-one room that ends in an hour, without unsend', async () => {
  const key = 'one to one key';
  const [clinic, patient, third] = [await person(), await person(), await person()];
  await clinic.page.goto(base);
  await clinic.page.fill('#create-room', 'clinic-room');
  await clinic.page.fill('#create-key', key);
  await clinic.page.fill('#create-admin', 'clinic-admin-1');
  await clinic.page.selectOption('#create-lifetime', '1h');
  await clinic.page.fill('#create-max', '2');
  await clinic.page.uncheck('#create-unsend');
  await clinic.page.click('#panel-create button[type=submit]');
  await clinic.page.locator('#create-result').waitFor();
  await clinic.page.fill('#create-name', 'clinic');
  await clinic.page.click('#create-enter');
  await connected(clinic.page);
  const said = await clinic.page.textContent('#room-options');
  for (const part of ['ends ', 'up to 2 people', 'no unsend']) assert.ok(said.includes(part), said);
  await say(clinic.page, 'hello from the clinic');
  await messages(clinic.page).locator('.msg.own', { hasText: 'hello from the clinic' }).waitFor();
  assert.equal(await clinic.page.locator('#messages button[aria-label="Unsend this message"]').count(), 0);

  await enter(patient, 'clinic-room', key, 'patient');
  await third.page.goto(`${base}/r/clinic-room#key=${encodeURIComponent(key)}`);
  await third.page.fill('#join-name', 'third');
  await third.page.click('#panel-join button[type=submit]');
  await third.page.locator('#join-error', { hasText: 'The room is full.' }).waitFor();
  await accessible(clinic.page, 'a room with options');
});

test('an admin locks the room from the menu and makes another member an admin', async () => {
  const key = 'lock room key';
  const [ann, bo, cy] = [await person(), await person(), await person()];
  await createRoom(ann.page, 'lock-room', key, 'lock-admin-1');
  await ann.page.goto(`${base}/r/lock-room#key=${encodeURIComponent(key)}`);
  await ann.page.fill('#join-name', 'ann');
  await ann.page.fill('#join-admin', 'lock-admin-1');
  await ann.page.click('#panel-join button[type=submit]');
  await connected(ann.page);
  await enter(bo, 'lock-room', key, 'bo');
  assert.equal(await bo.page.isVisible('#lock-btn'), false, 'only an admin sees the lock');
  await ann.page.click('#lock-btn');
  await bo.page.locator('#room-options', { hasText: 'locked' }).waitFor();
  await cy.page.goto(`${base}/r/lock-room#key=${encodeURIComponent(key)}`);
  await cy.page.fill('#join-name', 'cy');
  await cy.page.click('#panel-join button[type=submit]');
  await cy.page.locator('#join-error', { hasText: 'The room is locked' }).waitFor();

  await ann.page.click('#member-list button[aria-label="Make admin bo"]');
  await ann.page.click('#confirm-ok');
  await bo.page.locator('#delete-room-btn').waitFor();
  assert.equal(await bo.page.textContent('#lock-btn'), 'Unlock room');
  await bo.page.click('#lock-btn');
  await ann.page.locator('#lock-btn', { hasText: 'Lock room' }).waitFor();
  await enter(cy, 'lock-room', key, 'cy');
});

test('an admin messages every member privately in one step, each under its own pair key', async () => {
  const key = 'teacher room key';
  const teacher = await person();
  const students = [await person(), await person(), await person()];
  await createRoom(teacher.page, 'teach-room', key, 'teach-admin-1');
  await teacher.page.goto(`${base}/r/teach-room#key=${encodeURIComponent(key)}`);
  await teacher.page.fill('#join-name', 'teacher');
  await teacher.page.fill('#join-admin', 'teach-admin-1');
  await teacher.page.click('#panel-join button[type=submit]');
  await connected(teacher.page);
  for (const [i, s] of students.entries()) await enter(s, 'teach-room', key, `student${i}`);
  await teacher.page.locator('#member-list li', { hasText: 'student2' }).waitFor();
  await teacher.page.click('#broadcast-btn');
  await teacher.page.fill('#broadcast-text', 'See me after class');
  await teacher.page.click('#broadcast-send');
  await messages(teacher.page).getByText('Sent privately to 3 members.').waitFor();
  for (const s of students) {
    const conv = s.page.locator('#conv-list .conv[data-conv="teacher"]');
    await conv.locator('.unread', { hasText: '1' }).waitFor();
    await conv.click();
    await messages(s.page).getByText('See me after class').waitFor();
  }
  const dms = teacher.frames.filter((f) => f.includes('"type":"dm"') && !f.includes('"from"'));
  assert.equal(dms.length, 3, 'one sealed DM per member');
  assert.ok(dms.every((f) => !f.includes('See me after class')), 'sealed, not plain');
});

test('private conversations have their own place, unread counts and a composer that says where it sends', async () => {
  const key = 'conversation key';
  const [jo, kim, lou] = [await person(), await person(), await person()];
  await createRoom(jo.page, 'conv-room', key, 'conv-admin-1');
  for (const [p, name] of [[jo, 'jo'], [kim, 'kim'], [lou, 'lou']]) await enter(p, 'conv-room', key, name);
  // No private conversation yet: no list, and the composer writes to the room (of three, once
  // lou's join has reached jo's page: it may still be on its way when lou's own page is in).
  await jo.page.locator('#compose-to-text', { hasText: 'To everyone in the room (3)' }).waitFor();
  assert.equal(await jo.page.isVisible('#conversations'), false);
  assert.equal(await jo.page.getAttribute('#compose', 'placeholder'), 'Message everyone');

  await kim.page.click('#member-list button[aria-label="Private message to jo"]');
  assert.equal(await kim.page.getAttribute('#compose', 'placeholder'), 'Message jo privately');
  await say(kim.page, 'kim to jo, one');
  await say(kim.page, 'kim to jo, two');
  await lou.page.click('#member-list button[aria-label="Private message to jo"]');
  await say(lou.page, 'lou to jo');
  await say(kim.page, 'kim to jo, three');
  await kim.page.click('#conv-list .conv[data-conv=""]');
  await say(kim.page, 'kim to the room');

  // Jo: the room (open), then kim with 3 unread and lou with 1, and a polite word for each.
  await messages(jo.page).getByText('kim to the room').waitFor();
  await jo.page.locator('#conv-list .conv[data-conv="kim"] .unread', { hasText: '3' }).waitFor();
  await jo.page.locator('#conv-list .conv[data-conv="lou"] .unread', { hasText: '1' }).waitFor();
  assert.deepEqual(await jo.page.$$eval('#conv-list .conv', (b) => b.map((x) => x.dataset.conv)), ['', 'kim', 'lou']);
  assert.equal(await jo.page.getAttribute('#messages', 'role'), 'log');
  assert.equal(await jo.page.getAttribute('#messages', 'aria-live'), 'polite');
  assert.match(await jo.page.textContent('#announce'), /New private message from (kim|lou)/);
  // Each conversation shows its own lines only.
  await jo.page.locator('#conv-list .conv[data-conv="kim"]').click();
  for (const text of ['kim to jo, one', 'kim to jo, two', 'kim to jo, three']) await messages(jo.page).getByText(text).waitFor();
  assert.equal(await messages(jo.page).getByText('lou to jo').isVisible(), false);
  assert.equal(await messages(jo.page).getByText('kim to the room').isVisible(), false);
  assert.equal(await jo.page.getAttribute('#conv-list .conv[data-conv="kim"]', 'aria-current'), 'true');
  assert.equal(await jo.page.locator('#conv-list .conv[data-conv="kim"] .unread').count(), 0);
  await say(jo.page, 'jo answers kim');
  await messages(kim.page).getByText('jo answers kim').waitFor({ state: 'attached' });
  assert.equal(await messages(lou.page).getByText('jo answers kim').count(), 0);
  await jo.page.screenshot({ path: join(SHOTS, 'dm-desktop-light.png') });

  // Kim leaves: her conversation stays readable on Jo's page, and nothing more can go to her.
  await kim.page.click('#leave-btn');
  await jo.page.locator('#conv-list .conv[data-conv="kim"]', { hasText: '(left)' }).waitFor();
  assert.match(await jo.page.textContent('#compose-to-text'), /kim has left/);
  assert.equal(await jo.page.isDisabled('#compose'), true);
  assert.ok(await messages(jo.page).getByText('kim to jo, one').isVisible());
  await jo.page.click('#dm-cancel');
  assert.equal(await jo.page.isDisabled('#compose'), false);
  assert.deepEqual([...jo.problems, ...kim.problems, ...lou.problems], []);
  for (const p of [jo, kim, lou]) await p.context.close();
});

test('verify a member: both pages and the terminal read the same safety code, and a changed key is flagged', async (t) => {
  const key = 'verify key';
  const env = { EPHEMERA_ROOM_KEY: key };
  const [mo, ned] = [await person(), await person()];
  await createRoom(mo.page, 'verify-room', key, 'verify-admin-1');
  await enter(mo, 'verify-room', key, 'mo');
  await enter(ned, 'verify-room', key, 'ned');
  const tty = terminal(t, 'verify-room', 'tty', env);
  await messages(mo.page).getByText('tty joined').waitFor();

  const moSees = await safetyCodeShown(mo.page, 'ned');
  assert.match(moSees, /^\d{5}( \d{5}){5}$/);
  assert.equal(await safetyCodeShown(ned.page, 'mo'), moSees);
  await ned.page.click('#verify-cancel');
  await mo.page.click('#verify-ok');
  await mo.page.locator('#member-list li', { hasText: 'ned' }).locator('.verified').waitFor();

  // The terminal computes the same code as the browser.
  const withTty = await safetyCodeShown(mo.page, 'tty');
  await mo.page.click('#verify-ok');
  tty.type('/verify mo');
  const [, printed] = await tty.wait(/safety code with mo: (\d{5}(?: \d{5}){5})/);
  assert.equal(printed, withTty);

  // The marks are the tab's: a reload keeps them.
  await mo.page.reload();
  await connected(mo.page);
  await mo.page.locator('#member-list li', { hasText: 'tty' }).locator('.verified').waitFor();
  await mo.page.locator('#member-list li', { hasText: 'ned' }).locator('.verified').waitFor();

  // Ned leaves, and someone else joins as "ned", with another key: Mo is warned.
  await ned.page.click('#leave-btn');
  await messages(mo.page).getByText('ned left').waitFor();
  const impostor = await person();
  await enter(impostor, 'verify-room', key, 'ned');
  await messages(mo.page).getByText("ned's key is not the one you verified").waitFor();
  await mo.page.locator('#member-list li', { hasText: 'ned' }).locator('.key-changed').waitFor();
  assert.equal(await mo.page.locator('#member-list li', { hasText: 'ned' }).locator('.verified').count(), 0);
  assert.deepEqual([...mo.problems, ...ned.problems, ...impostor.problems], []);
  for (const p of [mo, ned, impostor]) await p.context.close();
});

test('a quick room in one click: generated ID, key and admin password, shown once, and the creator is in', async () => {
  const pat = await person();
  await pat.page.goto(base);
  await pat.page.click('#quick-btn');
  await pat.page.locator('#quick-error', { hasText: 'Enter your name' }).waitFor();
  assert.equal(await pat.page.evaluate(() => document.activeElement.id), 'quick-name');
  await pat.page.fill('#quick-name', 'pat');
  await pat.page.click('#quick-btn');
  await pat.page.locator('#quick-dialog[open]').waitFor();
  const link = await pat.page.inputValue('#quick-link');
  const admin = await pat.page.inputValue('#quick-admin');
  const [, roomId] = link.match(/\/r\/([A-Za-z0-9][A-Za-z0-9_-]{15})#key=[A-Za-z0-9_-]{22}$/);
  assert.match(admin, /^[A-Za-z0-9_-]{20}$/);
  await pat.page.click('#quick-done');
  // Shown once: the dialog forgets both as it closes.
  await pat.page.waitForFunction(() => !document.getElementById('quick-link').value && !document.getElementById('quick-admin').value);
  await connected(pat.page);
  assert.equal(new URL(pat.page.url()).pathname, `/r/${roomId}`);
  assert.equal(await pat.page.isVisible('#delete-room-btn'), true);

  // The link lets a guest in; the admin password deletes the room, and the guest is told.
  const guest = await person();
  await guest.page.goto(link);
  await guest.page.fill('#join-name', 'guest');
  await guest.page.click('#panel-join button[type=submit]');
  await connected(guest.page);
  const deleted = await guest.page.evaluate(async ({ roomId, admin }) => (await fetch(`/api/rooms/${roomId}`, {
    method: 'DELETE', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ admin_password: admin }),
  })).status, { roomId, admin });
  assert.equal(deleted, 204);
  await guest.page.locator('#room-notice', { hasText: 'deleted' }).waitFor();
  await pat.page.locator('#room-notice', { hasText: 'deleted' }).waitFor();

  // Generated room IDs never start with - or _ (a - would read as an option on a command line).
  const starts = await pat.page.evaluate(async () => {
    const c = await import('/js/crypto.js');
    return [...new Set(Array.from({ length: 2000 }, () => c.randomRoomId()[0]))].join('');
  });
  assert.doesNotMatch(starts, /[-_]/);
  for (const p of [pat, guest]) await p.context.close();
});

/**
 * A file pasted into the composer, as a clipboard paste of a screenshot would be; with
 * `cancelFirst`, the open dialog's Cancel is pressed in the same task, before its `close` event
 * has been delivered, as a quick second paste can do.
 */
async function paste(page, name, cancelFirst = false) {
  await page.evaluate(({ bytes, name, cancelFirst }) => {
    if (cancelFirst) document.getElementById('confirm-cancel').click();
    const data = new DataTransfer();
    data.items.add(new File([new Uint8Array(bytes)], name, { type: 'image/png' }));
    document.getElementById('compose').dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
  }, { bytes: [...PNG], name, cancelFirst });
}

test('files pasted or dropped go after a yes that names them and says where they go', async () => {
  const key = 'paste key';
  const [quin, rae] = [await person(), await person()];
  await createRoom(quin.page, 'paste-room', key, 'paste-admin-1');
  await enter(quin, 'paste-room', key, 'quin');
  await enter(rae, 'paste-room', key, 'rae');

  await paste(quin.page, 'pasted-by-mistake.png');
  await quin.page.locator('#confirm-dialog[open]', { hasText: 'pasted-by-mistake.png' }).waitFor();
  assert.match(await quin.page.textContent('#confirm-text'), /to everyone in the room/);
  await paste(quin.page, 'shot.png', true);
  await quin.page.locator('#confirm-dialog[open]', { hasText: 'shot.png' }).waitFor();
  await quin.page.click('#confirm-ok');
  await messages(rae.page).locator('img[alt="shot.png"]').waitFor();
  assert.equal(await messages(rae.page).locator('img[alt="pasted-by-mistake.png"]').count(), 0);

  // Dropped on the room view while a private conversation is open: it goes to that member only.
  await quin.page.click('#member-list button[aria-label="Private message to rae"]');
  await quin.page.evaluate((bytes) => {
    const data = new DataTransfer();
    data.items.add(new File([new Uint8Array(bytes)], 'dropped.png', { type: 'image/png' }));
    document.getElementById('room').dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
  }, [...PNG]);
  await quin.page.locator('#confirm-dialog[open]', { hasText: 'privately to rae' }).waitFor();
  await quin.page.click('#confirm-ok');
  await rae.page.locator('#conv-list .conv[data-conv="quin"] .unread', { hasText: '1' }).waitFor();
  await rae.page.click('#conv-list .conv[data-conv="quin"]');
  await messages(rae.page).locator('img[alt="dropped.png"]').waitFor();
  assert.deepEqual([...quin.problems, ...rae.problems], []);
  for (const p of [quin, rae]) await p.context.close();
});

for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
  test(`at ${size} width, by keyboard alone: axe finds nothing serious on the home page, a room, a DM and each dialog`, async () => {
    const key = `a11y key ${size}`;
    const [uma, vic] = [await person(viewport), await person(viewport)];
    await uma.page.goto(base);
    await checkBothSchemes(uma.page, 'home', size);
    if (size === 'phone') {
      const tops = await uma.page.$$eval('.tabs [role=tab]', (tabs) => tabs.map((tab) => tab.getBoundingClientRect().top));
      assert.equal(new Set(tops).size, 1, 'the home page tabs sit on one line');
    }

    // A quick room, by keyboard: Tab to the name, type it, Enter.
    for (let i = 0; i < 10 && (await uma.page.evaluate(() => document.activeElement?.id)) !== 'quick-name'; i++) await uma.page.keyboard.press('Tab');
    await uma.page.keyboard.type('uma');
    await uma.page.keyboard.press('Enter');
    await uma.page.locator('#quick-dialog[open]').waitFor();
    assert.equal(await uma.page.evaluate(() => document.activeElement.id), 'quick-link-copy');
    await checkBothSchemes(uma.page, 'dialog-quick-room', size);
    const link = await uma.page.inputValue('#quick-link');
    await uma.page.keyboard.press('Escape');
    await uma.page.locator('#quick-dialog[open]').waitFor({ state: 'detached' });
    assert.equal(await uma.page.evaluate(() => document.activeElement.id), 'compose');
    await vic.page.goto(link);
    await vic.page.fill('#join-name', 'vic');
    await vic.page.keyboard.press('Enter');
    await connected(vic.page);
    await uma.page.keyboard.type('hello by keyboard, see https://example.org');
    await uma.page.keyboard.press('Enter');
    await messages(vic.page).getByText('hello by keyboard').waitFor();
    await say(vic.page, 'and a reply from vic');
    await messages(uma.page).getByText('and a reply from vic').waitFor();
    await checkBothSchemes(uma.page, 'room', size);

    if (size === 'phone') {
      // The log gets the screen: a compact header, the actions in a menu, the placeholder whole.
      const layout = await uma.page.evaluate(() => {
        const box = (id) => document.getElementById(id).getBoundingClientRect();
        const compose = document.getElementById('compose');
        const style = getComputedStyle(compose);
        const ctx = document.createElement('canvas').getContext('2d');
        ctx.font = style.font;
        return {
          head: box('room').top + document.querySelector('.room-head').getBoundingClientRect().height,
          log: box('messages').height,
          actionsShown: getComputedStyle(document.getElementById('room-actions')).display !== 'none',
          placeholder: ctx.measureText(compose.placeholder).width,
          room: compose.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight),
          height: innerHeight,
        };
      });
      assert.ok(layout.head <= 0.12 * layout.height, `header ends at ${layout.head}px of ${layout.height}`);
      assert.ok(layout.log >= 0.55 * layout.height, `the log is ${layout.log}px of ${layout.height}`);
      assert.equal(layout.actionsShown, false);
      assert.ok(layout.placeholder <= layout.room, `placeholder ${layout.placeholder}px in ${layout.room}px`);
      // The menu, by keyboard: Enter opens it, Escape closes it and gives the focus back.
      await uma.page.focus('#menu-toggle');
      await uma.page.keyboard.press('Enter');
      assert.equal(await uma.page.isVisible('#leave-btn'), true);
      await checkBothSchemes(uma.page, 'room-menu', size);
      await uma.page.keyboard.press('Escape');
      assert.equal(await uma.page.isVisible('#leave-btn'), false);
      assert.equal(await uma.page.evaluate(() => document.activeElement.id), 'menu-toggle');
      await uma.page.focus('#members-toggle');
      await uma.page.keyboard.press('Enter');
      await checkBothSchemes(uma.page, 'room-members', size);
    }

    // A private conversation, opened from the member list by keyboard.
    await uma.page.focus('#member-list button[aria-label="Private message to vic"]');
    await uma.page.keyboard.press('Enter');
    assert.equal(await uma.page.evaluate(() => document.activeElement.id), 'compose');
    await uma.page.keyboard.type('just between us');
    await uma.page.keyboard.press('Enter');
    await vic.page.locator('#conv-list .conv[data-conv="uma"]').waitFor();
    await vic.page.focus('#conv-list .conv[data-conv="uma"]');
    await vic.page.keyboard.press('Enter');
    await messages(vic.page).getByText('just between us').waitFor();
    await checkBothSchemes(vic.page, 'dm', size);

    // Each dialog: verify (from the private conversation's own button), then the confirmations.
    await vic.page.focus('#verify-partner');
    await vic.page.keyboard.press('Enter');
    await vic.page.locator('#verify-dialog[open]').waitFor();
    assert.equal(await vic.page.evaluate(() => document.activeElement.id), 'verify-ok');
    await checkBothSchemes(vic.page, 'dialog-verify', size);
    await vic.page.keyboard.press('Enter');
    await vic.page.locator('#conv-list .conv[data-conv="uma"] .verified').waitFor();

    await paste(vic.page, 'screenshot.png');
    await vic.page.locator('#confirm-dialog[open]').waitFor();
    assert.equal(await vic.page.evaluate(() => document.activeElement.id), 'confirm-cancel');
    await checkBothSchemes(vic.page, 'dialog-send-file', size);
    await vic.page.keyboard.press('Escape');

    if (size === 'phone') await uma.page.click('#members-toggle');
    await uma.page.focus('#member-list button[aria-label="Remove vic"]');
    await uma.page.keyboard.press('Enter');
    await uma.page.locator('#confirm-dialog[open]').waitFor();
    await checkBothSchemes(uma.page, 'dialog-remove', size);
    await uma.page.keyboard.press('Tab');
    assert.equal(await uma.page.evaluate(() => document.activeElement.id), 'confirm-ok');
    await uma.page.keyboard.press('Enter');
    await vic.page.locator('#room-notice', { hasText: 'removed' }).waitFor();
    await checkBothSchemes(vic.page, 'room-ended', size);
    assert.deepEqual([...uma.problems, ...vic.problems], []);
    for (const p of [uma, vic]) await p.context.close();
  });
}

test('a crowd: the count from one summary a second, the list a page at a time, and a DM from someone on no page', async (t) => {
  // A server whose crowds start past 2 members, so that three pages make one.
  const crowdServer = await startServer(['--crowd-size', '2']);
  t.after(() => crowdServer.server.kill('SIGTERM'));
  const at = crowdServer.base;
  const key = 'crowd key';
  const [amy, ben, cat] = [await person(), await person(), await person()];
  await createRoom(amy.page, 'crowd-room', key, 'crowd-admin-1', at);
  for (const [p, name] of [[amy, 'amy'], [ben, 'ben'], [cat, 'cat']]) await enter(p, 'crowd-room', key, name, at);
  // Amy heard Ben by name (two is not a crowd), and Cat only in the summary.
  await messages(amy.page).getByText('ben joined. 2 members here.').waitFor();
  await messages(amy.page).getByText('1 joined. 3 members here.').waitFor();
  assert.equal(await amy.page.textContent('#member-count'), '(3)');
  assert.match(await amy.page.textContent('#compose-to-text'), /\(3\)/);
  // Cat's list is the first page (amy, ben) and a way to the rest.
  assert.equal(await cat.page.textContent('#member-count'), '(3)');
  await cat.page.locator('#member-list', { hasText: '1 more not shown' }).waitFor();
  await cat.page.getByRole('button', { name: 'Show more' }).click();
  await cat.page.locator('#member-list li', { hasText: 'cat' }).waitFor();
  assert.equal(await cat.page.locator('#member-list', { hasText: 'more not shown' }).count(), 0);
  // Cat writes to Amy, whose list has no Cat: the DM brings its key, and it opens.
  await cat.page.click('#member-list button[aria-label="Private message to amy"]');
  await say(cat.page, 'hello from the crowd');
  await amy.page.locator('#conv-list .conv[data-conv="cat"] .unread', { hasText: '1' }).waitFor();
  await amy.page.click('#conv-list .conv[data-conv="cat"]');
  await messages(amy.page).getByText('hello from the crowd').waitFor();
  assert.equal(await messages(amy.page).getByText('could not be decrypted').count(), 0);
  // Cat leaves: the room is small again, its leave only counted; Amy's page asks for the whole
  // list again, and Cat is gone from it (her conversation stays, marked as left).
  await cat.page.click('#leave-btn');
  await amy.page.click('#conv-list .conv[data-conv=""]');
  await messages(amy.page).getByText('1 left. 2 members here.').waitFor();
  await amy.page.locator('#member-list li', { hasText: 'cat' }).waitFor({ state: 'detached' });
  await amy.page.locator('#conv-list .conv[data-conv="cat"]', { hasText: '(left)' }).waitFor();
  assert.deepEqual([...amy.problems, ...ben.problems, ...cat.problems], []);
  for (const p of [amy, ben, cat]) await p.context.close();
});
