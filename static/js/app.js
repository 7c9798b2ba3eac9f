// The Ephemera web client: home (create, join, delete, lobby) and the room. Everything a member
// says is sealed here with keys derived here; the server sees only the `auth` proof and envelopes.

import * as c from './crypto.js';

const $ = (id) => document.getElementById(id);
const FILE_CHUNK = 128 * 1024;
// What a client holds of files still arriving: other members choose what they send, so the
// browser's memory is bounded here, not by their good will.
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const MAX_PARTIAL_BYTES = 128 * 1024 * 1024;
const MAX_PARTIAL_FILES = 16;
const MAX_PARTIAL_FILES_PER_SENDER = 4;
// A file none of whose chunks came for this long is given up, so that files left unfinished do
// not keep the places of the next ones.
const PARTIAL_FILE_IDLE_MS = 60 * 1000;
const ROOM_ID = /^[A-Za-z0-9_-]{3,64}$/;

/** Builds an element; children are nodes or text, never HTML. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function time(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(data?.error?.message || `HTTP ${response.status}`);
    error.code = data?.error?.code;
    throw error;
  }
  return data;
}

// ---------------------------------------------------------------- home

function selectTab(name) {
  for (const tab of ['create', 'join', 'delete']) {
    const on = tab === name;
    $(`tab-${tab}`).setAttribute('aria-selected', String(on));
    $(`tab-${tab}`).tabIndex = on ? 0 : -1;
    $(`panel-${tab}`).hidden = !on;
  }
}

function initTabs() {
  const order = ['create', 'join', 'delete'];
  for (const name of order) {
    $(`tab-${name}`).addEventListener('click', () => selectTab(name));
    $(`tab-${name}`).addEventListener('keydown', (e) => {
      const step = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
      if (!step) return;
      const next = order[(order.indexOf(name) + step + order.length) % order.length];
      selectTab(next);
      $(`tab-${next}`).focus();
    });
  }
}

function initCreate() {
  $('create-key').value = c.randomKey(22);
  $('create-generate').addEventListener('click', () => { $('create-room').value = c.randomKey(16); });
  let created = null;
  $('panel-create').addEventListener('submit', async (e) => {
    e.preventDefault();
    const error = $('create-error');
    error.textContent = '';
    const roomId = $('create-room').value.trim() || c.randomKey(16);
    const key = $('create-key').value;
    const admin = $('create-admin').value;
    if (!ROOM_ID.test(roomId)) return void (error.textContent = 'Room IDs are 3 to 64 letters, digits, - or _.');
    if (key.length < 5) return void (error.textContent = 'The room key needs at least 5 characters.');
    if (admin.length < 8) return void (error.textContent = 'The admin password needs at least 8 characters.');
    if (admin === key) return void (error.textContent = 'The admin password must differ from the room key.');
    error.textContent = 'Deriving keys…';
    try {
      const { auth } = await c.deriveRoomSecrets(roomId, key);
      const title = $('create-title').value.trim();
      const room = await api('POST', '/api/rooms', {
        room_id: roomId, auth, admin_password: admin, listed: $('create-listed').checked, title: title || null,
      });
      error.textContent = '';
      created = { roomId: room.room_id, key, admin };
      $('share-link').value = `${location.origin}/r/${encodeURIComponent(room.room_id)}#key=${encodeURIComponent(key)}`;
      $('create-result').hidden = false;
      $('create-name').focus();
      loadLobby();
    } catch (err) {
      error.textContent = err.code === 'room_exists' ? 'That room ID is taken; pick another.' : err.message;
    }
  });
  $('share-copy').addEventListener('click', async () => {
    $('share-link').select();
    try { await navigator.clipboard.writeText($('share-link').value); $('share-copy').textContent = 'Copied'; } catch { document.execCommand('copy'); }
  });
  $('create-enter').addEventListener('click', () => {
    const name = $('create-name').value.trim();
    if (!created || !name) return void $('create-name').focus();
    enterRoom({ roomId: created.roomId, key: created.key, name, adminPassword: created.admin });
  });
}

function initJoin() {
  $('panel-join').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('join-name').value.trim();
    const roomId = $('join-room').value.trim();
    const key = $('join-key').value;
    const error = $('join-error');
    if (!name) return void (error.textContent = 'Enter your name.');
    if (!ROOM_ID.test(roomId)) return void (error.textContent = 'Enter the room ID.');
    if (key.length < 5) return void (error.textContent = 'Enter the room key (at least 5 characters).');
    error.textContent = '';
    enterRoom({ roomId, key, name, adminPassword: $('join-admin').value || undefined });
  });
}

function initDelete() {
  $('panel-delete').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('delete-error').textContent = '';
    $('delete-done').textContent = '';
    const roomId = $('delete-room').value.trim();
    try {
      await api('DELETE', `/api/rooms/${encodeURIComponent(roomId)}`, { admin_password: $('delete-admin').value });
      $('delete-done').textContent = 'The room is deleted; everyone in it was disconnected.';
      loadLobby();
    } catch (err) {
      $('delete-error').textContent = err.message;
    }
  });
}

async function loadLobby() {
  try {
    const { rooms } = await api('GET', '/api/rooms');
    const list = $('lobby-list');
    list.replaceChildren(...rooms.map((r) => el('li', {},
      el('span', {}, el('strong', {}, r.title || r.room_id), ' ', el('span', { class: 'hint' }, `${r.room_id} · ${r.members} ${r.members === 1 ? 'member' : 'members'}`)),
      el('button', { type: 'button', onclick: () => { selectTab('join'); $('join-room').value = r.room_id; $('join-key').focus(); } }, `Join ${r.title || r.room_id}`),
    )));
    $('lobby-empty').hidden = rooms.length > 0;
  } catch { /* the lobby is a convenience */ }
}

function prefillFromLink() {
  const match = location.pathname.match(/^\/r\/([^/]+)$/);
  if (!match) return;
  selectTab('join');
  $('join-room').value = decodeURIComponent(match[1]);
  const key = new URLSearchParams(location.hash.slice(1)).get('key');
  if (key) $('join-key').value = key;
  // The key has been read: out of the address bar and the history, where it would outlive the
  // visit (and show on screen shares).
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  $('join-name').focus();
}

// ---------------------------------------------------------------- room

let current = null;

async function enterRoom(options) {
  $('home').hidden = true;
  $('room').hidden = false;
  current = new Room(options);
  await current.start();
}

class Room {
  constructor({ roomId, key, name, adminPassword }) {
    Object.assign(this, { roomId, key, name, adminPassword });
    this.members = new Map(); // name -> {name, admin, pubkey}
    this.dmKeys = new Map(); // other name -> Promise<{key, fp}>
    this.messages = new Map(); // seq -> {node, own, file}
    this.files = new Map(); // sender, conversation and file id -> {node, meta, parts, got, bytes, seqs}
    this.partialBytes = 0;
    this.refusedFiles = new Set(); // keys of files refused, so that their other chunks are quiet
    this.urls = new Map(); // seq -> object URL shown for it
    this.readers = new Map(); // name -> highest seq read
    this.typers = new Map(); // name -> timer
    this.session = null;
    this.attempt = 0;
    this.dmTo = null;
    this.unread = 0;
    this.ended = false;
    this.pendingSends = new Map(); // txn -> resolve
    this.txn = 0;
  }

  async start() {
    $('room-title').textContent = this.roomId;
    document.title = `${this.roomId} · Ephemera`;
    this.state('deriving keys…');
    const secrets = await c.deriveRoomSecrets(this.roomId, this.key);
    this.auth = secrets.auth;
    this.encKey = await c.aesKey(secrets.enc);
    $('room-fp').textContent = await c.fingerprint('ephemera/v1/fp/room', secrets.enc);
    const pair = await c.dmKeyPair();
    this.privateKey = pair.privateKey;
    this.pubkey = pair.pubkey;
    this.bindUi();
    this.connect();
  }

  state(text, online = false) {
    $('conn-state').textContent = text;
    $('conn-state').dataset.state = online ? 'online' : 'offline';
  }

  connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/ws/${encodeURIComponent(this.roomId)}`);
    this.ws = ws;
    this.state(this.attempt ? 'reconnecting…' : 'connecting…');
    ws.addEventListener('open', () => {
      const join = { type: 'join', name: this.name, auth: this.auth, pubkey: this.pubkey };
      if (this.adminPassword) join.admin_password = this.adminPassword;
      if (this.session) join.session = this.session;
      ws.send(JSON.stringify(join));
    });
    ws.addEventListener('message', (e) => this.onFrame(JSON.parse(e.data)).catch((err) => console.error(err)));
    ws.addEventListener('close', (e) => this.onClose(e));
  }

  onClose(e) {
    if (this.ended) return;
    const terminal = {
      4400: 'The server did not understand this client.',
      4401: 'Wrong room key or admin password.',
      4403: 'You were removed from the room.',
      4404: 'This room does not exist (or was deleted).',
      4409: this.session ? 'You are connected from another window.' : 'That name is already in the room; pick another.',
      4410: 'The room was deleted.',
      4413: 'A message was too large.',
      4422: 'That name cannot be used.',
      4429: 'Too many failed attempts; wait a minute.',
      4503: 'The room is full.',
    }[e.code];
    if (terminal) return this.end(terminal);
    this.attempt += 1;
    const delay = Math.min(30000, 1000 * 2 ** Math.min(this.attempt - 1, 5)) * (0.75 + Math.random() / 2);
    this.state(`disconnected; retrying in ${Math.round(delay / 1000)} s`);
    setTimeout(() => this.connect(), delay);
  }

  end(text) {
    this.ended = true;
    this.state('disconnected');
    const notice = $('room-notice');
    notice.textContent = text;
    notice.hidden = false;
    $('compose').disabled = true;
    try { this.ws.close(); } catch { /* already closed */ }
  }

  send(frame) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  nextTxn() {
    this.txn += 1;
    return `${Date.now().toString(36)}-${this.txn}`;
  }

  // -------------------------------------------------- incoming

  async onFrame(f) {
    switch (f.type) {
      case 'welcome': return this.onWelcome(f);
      case 'message': return this.onMessage(f, false);
      case 'dm': return this.onMessage(f, true);
      case 'bot': return this.onBot(f);
      case 'typing': return this.onTyping(f);
      case 'read': return this.onRead(f);
      case 'unsent': return this.onUnsent(f);
      case 'members': return this.setMembers(f.members);
      case 'kicked': return this.end(`You were removed from the room by ${f.by}.`);
      case 'room_deleted': return this.end('The room was deleted by its admin. Nothing said in it remains.');
      case 'error': return this.onError(f);
      default: return undefined;
    }
  }

  onWelcome(f) {
    const again = this.session !== null;
    this.session = f.session;
    this.attempt = 0;
    this.admin = f.you.admin;
    this.name = f.you.name;
    this.limits = f.limits;
    $('delete-room-btn').hidden = !this.admin;
    this.setMembers(f.members);
    this.state('connected', true);
    if (again) this.notice('Reconnected.');
    $('compose').focus();
  }

  setMembers(list) {
    this.members = new Map(list.map((m) => [m.name, m]));
    this.renderMembers();
  }

  renderMembers() {
    const items = [...this.members.values()].map((m) => {
      const me = m.name === this.name;
      const fp = el('span', { class: 'fp' });
      if (!me && m.pubkey) this.dmKey(m.name).then((k) => { fp.textContent = `DM key ${k.fp}`; }).catch(() => { fp.textContent = 'DM key unusable'; });
      return el('li', {},
        el('span', { class: 'who' }, el('strong', {}, m.name), me ? ' (you)' : '', m.admin ? el('span', { class: 'badge' }, 'admin') : ''),
        fp,
        !me && m.pubkey ? el('button', { type: 'button', onclick: () => this.startDm(m.name), 'aria-label': `Private message to ${m.name}` }, 'DM') : '',
        !me && this.admin ? el('button', { type: 'button', class: 'danger', onclick: () => this.kick(m.name), 'aria-label': `Remove ${m.name}` }, 'Remove') : '',
      );
    });
    $('member-list').replaceChildren(...items);
    $('member-count').textContent = `(${this.members.size})`;
  }

  dmKey(other) {
    if (!this.dmKeys.has(other)) {
      const them = this.members.get(other);
      const promise = (async () => {
        const { key } = await c.dmKeyRaw(this.privateKey, them.pubkey, this.roomId, this.name, other);
        return { key: await c.aesKey(key), fp: await c.fingerprint('ephemera/v1/fp/dm', key), pubkey: them.pubkey };
      })();
      this.dmKeys.set(other, promise);
    }
    return this.dmKeys.get(other);
  }

  async onMessage(f, dm) {
    const own = f.from === this.name;
    const other = dm ? (own ? f.to : f.from) : null;
    let plain;
    try {
      const key = dm ? (await this.dmKey(other)).key : this.encKey;
      plain = await c.open(key, this.roomId, f.body);
      if (plain.from !== f.from) throw new Error('sender mismatch');
    } catch {
      plain = null;
    }
    this.pendingSends.get(f.txn)?.(f);
    this.pendingSends.delete(f.txn);
    if (plain?.kind === 'file' && plain.file) this.onFileChunk(f, plain.file, own, other);
    else this.addMessage(f, plain, own, other);
    if (!own) this.noticeIncoming(f.from);
    this.markRead(f.seq);
  }

  addMessage(f, plain, own, other) {
    const text = plain === null
      ? '⚠ This message could not be decrypted.'
      : typeof plain.text === 'string' ? plain.text : '(unsupported message)';
    const node = el('li', { class: `msg${own ? ' own' : ''}${other ? ' dm' : ''}${plain === null ? ' failed' : ''}`, 'data-seq': f.seq },
      this.meta(f, own, other),
      el('div', { class: 'text' }, text),
    );
    this.messages.set(f.seq, { node, own, text: `${f.from}${other ? ` → ${f.to}` : ''}: ${text}`, ts: f.ts });
    this.append(node);
  }

  meta(f, own, other, seqs = [f.seq]) {
    return el('div', { class: 'meta' },
      el('strong', {}, own ? 'You' : f.from),
      other ? el('span', {}, own ? `→ ${other} (private)` : '(private)') : '',
      el('time', { datetime: new Date(f.ts).toISOString() }, time(f.ts)),
      own ? el('button', { type: 'button', class: 'unsend', 'aria-label': 'Unsend this message', onclick: () => seqs.forEach((seq) => this.send({ type: 'unsend', seq })) }, 'Unsend') : '',
    );
  }

  /**
   * A file arrives chunk by chunk. Its chunks are matched by who sent them, in which
   * conversation, and the file's id, so no other member can slip chunks into it; its name, type,
   * size and number of chunks are the first chunk's, and a chunk that disagrees is dropped.
   */
  onFileChunk(f, file, own, other) {
    const key = JSON.stringify([f.from, other, String(file.id)]);
    if (this.refusedFiles.has(key)) return;
    let entry = this.files.get(key);
    if (!entry) {
      const now = Date.now();
      for (const stale of this.files.values()) {
        if (!stale.done && now - stale.last > PARTIAL_FILE_IDLE_MS) this.dropFile(stale, 'it stopped arriving');
      }
      const size = Number(file.size);
      const total = Number(file.total);
      const sane = Number.isSafeInteger(size) && size >= 0 && size <= MAX_FILE_BYTES
        && Number.isSafeInteger(total) && total >= Math.max(1, Math.ceil(size / FILE_CHUNK)) && total <= size + 1;
      const fromSender = [...this.files.values()].filter((e) => e.from === f.from && !e.done).length;
      const partial = [...this.files.values()].filter((e) => !e.done).length;
      if (!sane || fromSender >= MAX_PARTIAL_FILES_PER_SENDER || partial >= MAX_PARTIAL_FILES) {
        this.notice(`A file from ${f.from} was refused: ${sane ? 'too many files at once' : 'it is not a valid file'}.`);
        if (this.refusedFiles.size >= 256) this.refusedFiles.clear();
        this.refusedFiles.add(key);
        return;
      }
      const body = el('div', { class: 'text' }, `receiving ${file.name}…`);
      const seqs = [];
      const node = el('li', { class: `msg${own ? ' own' : ''}${other ? ' dm' : ''}`, 'data-seq': f.seq }, this.meta(f, own, other, seqs), body);
      entry = {
        from: f.from, node, body, seqs, parts: new Array(total), got: 0, bytes: 0, done: false, last: Date.now(),
        meta: { name: String(file.name), mime: String(file.mime || 'application/octet-stream'), size, total },
      };
      this.files.set(key, entry);
      this.append(node);
    }
    const { meta } = entry;
    entry.seqs.push(f.seq);
    this.messages.set(f.seq, { node: entry.node, own, text: `${f.from}: [file ${meta.name}]`, ts: f.ts, file: key });
    const index = Number(file.index);
    const fits = Number(file.total) === meta.total && Number(file.size) === meta.size
      && Number.isInteger(index) && index >= 0 && index < meta.total;
    if (entry.done || !fits || entry.parts[index] !== undefined) return;
    let data;
    try { data = c.b64uDecode(file.data); } catch { return; }
    if (data.length > FILE_CHUNK || entry.bytes + data.length > meta.size || this.partialBytes + data.length > MAX_PARTIAL_BYTES) {
      this.dropFile(entry, 'too large');
      return;
    }
    entry.parts[index] = data;
    entry.last = Date.now();
    entry.got += 1;
    entry.bytes += data.length;
    this.partialBytes += data.length;
    if (entry.got < meta.total) {
      entry.body.textContent = `receiving ${meta.name}… ${entry.got}/${meta.total}`;
      return;
    }
    this.partialBytes -= entry.bytes;
    entry.done = true;
    if (entry.bytes !== meta.size) {
      entry.parts = null;
      entry.body.textContent = `${meta.name} did not arrive whole.`;
      return;
    }
    const blob = new Blob(entry.parts, { type: meta.mime });
    entry.parts = null;
    const url = URL.createObjectURL(blob);
    this.urls.set(entry.seqs[0], url);
    const label = `${meta.name} (${Math.ceil(blob.size / 1024)} KiB)`;
    let view;
    if (/^image\//.test(meta.mime)) view = el('img', { src: url, alt: meta.name });
    else if (/^audio\//.test(meta.mime)) view = el('audio', { src: url, controls: true, 'aria-label': meta.name });
    else if (/^video\//.test(meta.mime)) view = el('video', { src: url, controls: true, 'aria-label': meta.name });
    entry.body.replaceChildren(view || '', el('a', { href: url, download: meta.name }, `Download ${label}`));
  }

  /** Gives up on a file still arriving, and the memory it held. */
  dropFile(entry, why) {
    if (entry.parts) this.partialBytes -= entry.bytes;
    entry.parts = null;
    entry.done = true;
    entry.body.textContent = `${entry.meta.name} was dropped: ${why}.`;
  }

  /** Lets go of the object URL shown for a message that is no longer shown. */
  revoke(seq) {
    const url = this.urls.get(seq);
    if (url) URL.revokeObjectURL(url);
    this.urls.delete(seq);
  }

  append(node) {
    const list = $('messages');
    const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    list.append(node);
    if (atEnd) list.scrollTop = list.scrollHeight;
  }

  onBot(f) {
    if (f.event === 'join' && f.member) this.members.set(f.member.name, f.member);
    if ((f.event === 'leave' || f.event === 'kick') && f.name) {
      this.members.delete(f.name);
      this.dmKeys.delete(f.name);
      if (this.dmTo === f.name) this.endDm();
    }
    if (f.event !== 'welcome') this.renderMembers();
    this.append(el('li', { class: 'msg bot', role: 'note' }, el('span', {}, f.text), ' ', el('time', { class: 'hint', datetime: new Date(f.ts).toISOString() }, time(f.ts))));
  }

  onTyping(f) {
    clearTimeout(this.typers.get(f.from));
    if (f.active) this.typers.set(f.from, setTimeout(() => { this.typers.delete(f.from); this.renderTyping(); }, 6000));
    else this.typers.delete(f.from);
    this.renderTyping();
  }

  renderTyping() {
    const names = [...this.typers.keys()];
    $('typing').textContent = names.length === 0 ? '' : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
  }

  onRead(f) {
    this.readers.set(f.from, Math.max(this.readers.get(f.from) || 0, f.seq));
    this.renderSeen();
  }

  renderSeen() {
    document.querySelectorAll('.seen').forEach((n) => n.remove());
    const own = [...this.messages.entries()].filter(([, m]) => m.own && !m.unsent);
    if (!own.length) return;
    const [seq, last] = own[own.length - 1];
    const who = [...this.readers.entries()].filter(([name, s]) => s >= seq && name !== this.name).map(([name]) => name);
    if (who.length) last.node.append(el('div', { class: 'seen' }, `Seen by ${who.join(', ')}`));
  }

  onUnsent(f) {
    const m = this.messages.get(f.seq);
    if (!m) return;
    if (m.file) {
      const entry = this.files.get(m.file);
      if (entry) {
        entry.seqs.forEach((seq) => this.revoke(seq));
        if (!entry.done) this.dropFile(entry, 'unsent');
      }
    }
    m.unsent = true;
    m.node.classList.add('unsent');
    m.node.replaceChildren(el('div', { class: 'text' }, f.by === (m.own ? this.name : null) ? 'You unsent a message.' : `A message was unsent by ${f.by}.`));
    m.text = '(unsent)';
    this.renderSeen();
  }

  onError(f) {
    if (f.code === 'rate_limited' && f.txn && this.pendingSends.has(f.txn)) {
      this.pendingSends.get(f.txn)({ retryAfter: f.retry_after_ms });
      this.pendingSends.delete(f.txn);
      return;
    }
    if (['bad_request', 'forbidden', 'no_such_member', 'no_such_message', 'rate_limited', 'store_unavailable'].includes(f.code)) {
      this.notice(f.message);
    }
  }

  notice(text) {
    const node = el('li', { class: 'msg bot', role: 'status' }, text);
    this.append(node);
  }

  noticeIncoming(from) {
    if (!document.hidden) return;
    this.unread += 1;
    document.title = `(${this.unread}) ${this.roomId} · Ephemera`;
    if ('Notification' in window && Notification.permission === 'granted') {
      // The notification names the sender only: the text stays out of the system's logs.
      new Notification('Ephemera', { body: `New message from ${from}`, tag: `ephemera-${this.roomId}` });
    }
  }

  markRead(seq) {
    this.lastSeq = Math.max(this.lastSeq || 0, seq);
    if (document.hidden) return;
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => {
      if (this.lastSeq > (this.readSent || 0)) {
        this.readSent = this.lastSeq;
        this.send({ type: 'read', seq: this.lastSeq });
      }
    }, 400);
  }

  // -------------------------------------------------- outgoing

  async sealFor(plain) {
    if (!this.dmTo) return { frame: { type: 'send' }, body: await c.seal(this.encKey, this.roomId, plain) };
    const { key } = await this.dmKey(this.dmTo);
    return { frame: { type: 'dm', to: this.dmTo }, body: await c.seal(key, this.roomId, { ...plain, to: this.dmTo }) };
  }

  /** Sends and waits for the echo; waits and tries again when rate limited. */
  async sendSealed(plain) {
    for (;;) {
      const { frame, body } = await this.sealFor(plain);
      const txn = this.nextTxn();
      const echoed = new Promise((resolve) => this.pendingSends.set(txn, resolve));
      this.send({ ...frame, txn, body });
      const result = await Promise.race([echoed, new Promise((r) => setTimeout(() => r({ timeout: true }), 30000))]);
      this.pendingSends.delete(txn);
      if (!result.retryAfter) return result;
      await new Promise((r) => setTimeout(r, result.retryAfter));
    }
  }

  async sendText(text) {
    this.stopTyping();
    await this.sendSealed({ from: this.name, kind: 'text', text });
  }

  async sendFile(file) {
    const id = c.randomKey(16);
    const bytes = new Uint8Array(await file.arrayBuffer());
    const total = Math.max(1, Math.ceil(bytes.length / FILE_CHUNK));
    for (let index = 0; index < total; index++) {
      const data = c.b64uEncode(bytes.subarray(index * FILE_CHUNK, (index + 1) * FILE_CHUNK));
      await this.sendSealed({
        from: this.name, kind: 'file',
        file: { id, name: file.name, mime: file.type || 'application/octet-stream', size: bytes.length, index, total, data },
      });
    }
  }

  startDm(name) {
    this.dmTo = name;
    $('dm-name').textContent = name;
    $('dm-target').hidden = false;
    $('compose').focus();
  }

  endDm() {
    this.dmTo = null;
    $('dm-target').hidden = true;
  }

  kick(name) {
    if (confirm(`Remove ${name} from the room?`)) this.send({ type: 'kick', name });
  }

  typing() {
    const now = Date.now();
    if (!this.typingSince || now - this.typingSince > 3000) {
      this.typingSince = now;
      this.send({ type: 'typing', active: true });
    }
    clearTimeout(this.typingStop);
    this.typingStop = setTimeout(() => this.stopTyping(), 4000);
  }

  stopTyping() {
    clearTimeout(this.typingStop);
    if (this.typingSince) {
      this.typingSince = 0;
      this.send({ type: 'typing', active: false });
    }
  }

  exportConversation() {
    const lines = [...$('messages').children].map((n) => n.innerText.replace(/\s*Unsend\s*/g, ' ').trim());
    const blob = new Blob([`Ephemera · ${this.roomId} · exported ${new Date().toISOString()}\n\n${lines.join('\n')}\n`], { type: 'text/plain' });
    const a = el('a', { href: URL.createObjectURL(blob), download: `ephemera-${this.roomId}-${new Date().toISOString().slice(0, 10)}.txt` });
    document.body.append(a);
    a.click();
    a.remove();
  }

  bindUi() {
    const compose = $('compose');
    $('composer').addEventListener('submit', (e) => {
      e.preventDefault();
      const text = compose.value;
      if (!text.trim() || this.ended) return;
      compose.value = '';
      this.sendText(text);
    });
    compose.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $('composer').requestSubmit();
      }
    });
    compose.addEventListener('input', () => (compose.value ? this.typing() : this.stopTyping()));
    $('dm-cancel').addEventListener('click', () => this.endDm());
    $('file-input').addEventListener('change', async (e) => {
      for (const file of e.target.files) await this.sendFile(file);
      e.target.value = '';
    });
    $('file-input').previousElementSibling.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); $('file-input').click(); }
    });
    const list = $('messages');
    list.addEventListener('dragover', (e) => { e.preventDefault(); list.classList.add('dragging'); });
    list.addEventListener('dragleave', () => list.classList.remove('dragging'));
    list.addEventListener('drop', async (e) => {
      e.preventDefault();
      list.classList.remove('dragging');
      for (const file of e.dataTransfer.files) await this.sendFile(file);
    });
    $('export-btn').addEventListener('click', () => this.exportConversation());
    $('notify-btn').addEventListener('click', async () => {
      if ('Notification' in window) $('notify-btn').textContent = (await Notification.requestPermission()) === 'granted' ? 'Notifying' : 'Notify me';
    });
    $('members-toggle').addEventListener('click', () => {
      const open = $('members').classList.toggle('open');
      $('members-toggle').setAttribute('aria-expanded', String(open));
    });
    $('delete-room-btn').addEventListener('click', () => {
      if (confirm('Delete this room for everyone? This cannot be undone.')) this.send({ type: 'delete_room' });
    });
    $('leave-btn').addEventListener('click', () => { this.ended = true; this.ws.close(1000); location.href = '/'; });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) {
        this.unread = 0;
        document.title = `${this.roomId} · Ephemera`;
        if (this.lastSeq) this.markRead(this.lastSeq);
      }
    });
  }
}

// ---------------------------------------------------------------- start

initTabs();
initCreate();
initJoin();
initDelete();
prefillFromLink();
loadLobby();

// For the browser tests: the crypto module, to check it against the contract's vectors.
globalThis.ephemeraCrypto = c;
