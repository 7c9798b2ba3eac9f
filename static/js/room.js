// The room view: one joined room's members, messages, files, typing and read marks, and what
// the member sends. Everything said is sealed here with keys derived here; the server sees only
// the `auth` proof and envelopes. The socket is the Connection's (transport.js), and files in
// chunks are files.js's.

import * as c from './crypto.js';
import { $, confirmDialog, el, time } from './dom.js';
import { chunks, Incoming } from './files.js';
import * as stay from './stay.js';
import { Connection } from './transport.js';

/** A quote of a message no longer there. */
const gone = () => el('div', { class: 'quote hint' }, '↩ a message no longer shown');

/** The reactions offered under a message. */
const REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '😢'];

/**
 * Text with its web links as links: opened in a new tab with no referrer and no opener, and
 * never fetched for a preview. Only http(s) URLs; everything else stays text.
 */
function linkify(text) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(/\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g)) {
    parts.push(text.slice(last, match.index));
    parts.push(el('a', { href: match[0], target: '_blank', rel: 'noopener noreferrer' }, match[0]));
    last = match.index + match[0].length;
  }
  parts.push(text.slice(last));
  return parts;
}

export class Room {
  /**
   * A room to enter: with the room key (`key`), or as this tab kept it before a reload
   * (`saved`, from stay.js), whose derived keys and `session` token bring the member back
   * quietly. `onLeave()` is called when the person goes home.
   */
  constructor({ roomId, key, name, adminPassword, saved, onLeave }) {
    Object.assign(this, { roomId, key, name, adminPassword, saved, onLeave });
    this.entered = false;
    this.members = new Map(); // name -> {name, admin, pubkey}
    this.dmKeys = new Map(); // other name -> Promise<{key, fp}>
    this.messages = new Map(); // seq -> {node, own, file}
    this.files = new Incoming(this);
    this.readers = new Map(); // name -> highest seq read
    this.typers = new Map(); // name -> timer
    this.dmTo = null;
    this.unread = 0;
    this.ended = false;
    this.pendingSends = new Map(); // txn -> resolve
    this.txn = 0;
    this.connection = new Connection({
      roomId,
      session: saved?.session,
      join: () => {
        const join = { name: this.name, auth: this.auth, pubkey: this.pubkey };
        if (this.adminPassword) join.admin_password = this.adminPassword;
        return join;
      },
      onFrame: (frame) => this.onFrame(frame),
      onEnd: (text, code) => this.end(text, code),
      onState: (text, online) => this.state(text, online),
    });
  }

  /**
   * Derives the keys (or takes the kept ones) and joins; resolves once the room has answered:
   * `{ ok: true }` at the `welcome`, or `{ ok: false, code, text }` when the join was refused,
   * in which case the room view was never shown.
   */
  async start() {
    let enc;
    let pair;
    if (this.saved) {
      ({ name: this.name, auth: this.auth, admin: this.adminPassword } = this.saved);
      enc = c.b64uDecode(this.saved.enc);
      pair = await c.restoreDmKeyPair(this.saved.dm, this.saved.pubkey);
    } else {
      const secrets = await c.deriveRoomSecrets(this.roomId, this.key);
      this.auth = secrets.auth;
      enc = secrets.enc;
      pair = await c.dmKeyPair();
    }
    this.enc = enc;
    this.encKey = await c.aesKey(enc);
    $('room-fp').textContent = await c.fingerprint('ephemera/v1/fp/room', enc);
    this.privateKey = pair.privateKey;
    this.pubkey = pair.pubkey;
    this.jwk = pair.jwk;
    const answered = new Promise((resolve) => { this.answered = resolve; });
    this.connection.open();
    return answered;
  }

  /** Keeps what a reload needs, in this tab only (see stay.js). */
  keep(session) {
    stay.save({
      roomId: this.roomId, name: this.name, auth: this.auth, enc: c.b64uEncode(this.enc),
      dm: this.jwk, pubkey: this.pubkey, session, admin: this.adminPassword || null,
    });
  }

  /** Shows the room view: called at the first `welcome`. */
  show() {
    this.entered = true;
    $('room-title').textContent = this.roomId;
    document.title = `${this.roomId} · Ephemera`;
    $('home').hidden = true;
    $('room').hidden = false;
    this.bindUi();
  }

  state(text, online = false) {
    $('conn-state').textContent = text;
    $('conn-state').dataset.state = online ? 'online' : 'offline';
  }

  /**
   * The room is over for this member (kicked, deleted, refused). Before the `welcome` the join
   * form hears why; after it, the view stays readable and exportable, with every action that
   * would reach the room disabled and one way home.
   */
  end(text, code) {
    if (this.ended) return;
    this.ended = true;
    this.connection.close();
    stay.clear();
    if (!this.entered) {
      this.answered({ ok: false, code, text });
      return;
    }
    this.state('disconnected');
    $('room-notice').textContent = text;
    $('room-ended').hidden = false;
    $('room').classList.add('room-ended');
    for (const control of $('composer').querySelectorAll('textarea, button, input, select')) control.disabled = true;
    $('composer').querySelector('.file-btn').setAttribute('aria-disabled', 'true');
    $('dm-target').hidden = true;
    for (const button of $('messages').querySelectorAll('.unsend, .act, .picker')) button.remove();
    for (const chip of $('messages').querySelectorAll('.reactions button')) chip.disabled = true;
    $('member-list').replaceChildren(el('li', { class: 'hint' }, 'You are no longer in this room.'));
    $('member-count').textContent = '';
    $('typing').textContent = '';
    $('delete-room-btn').hidden = true;
    $('notify-btn').hidden = true;
    $('leave-btn').hidden = true;
    $('home-btn').focus();
  }

  send(frame) {
    this.connection.send(frame);
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
    const again = this.welcomed === true;
    this.welcomed = true;
    this.keep(f.session);
    if (!this.entered) {
      this.show();
      this.answered({ ok: true });
    }
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
    const kind = plain?.kind;
    if (plain === null || kind === 'text') this.addMessage(f, plain, own, other);
    else if (kind === 'file' && plain.file) {
      this.files.chunk(f, plain.file, own, other);
      if (plain.file.index === 0) this.expire(f, plain.ttl);
    } else if (kind === 'react') this.onReact(f, plain, other);
    else if (kind === 'edit') this.onEdit(f, plain, other);
    else return; // a kind this client does not know: nothing to show
    if (!own && (plain === null || kind === 'text' || kind === 'file')) this.noticeIncoming(f.from);
    this.markRead(f.seq);
  }

  addMessage(f, plain, own, other) {
    const text = plain === null
      ? '⚠ This message could not be decrypted.'
      : typeof plain.text === 'string' ? plain.text : '(unsupported message)';
    const textNode = el('div', { class: 'text' }, linkify(text));
    const node = el('li', { class: `msg${own ? ' own' : ''}${other ? ' dm' : ''}${plain === null ? ' failed' : ''}`, 'data-seq': f.seq },
      this.meta(f, own, other, [f.seq], plain !== null),
      plain?.reply_to !== undefined ? this.quote(plain.reply_to) : '',
      textNode,
    );
    this.messages.set(f.seq, {
      node, own, from: f.from, other, textNode, plain: text, text: `${f.from}${other ? ` → ${f.to}` : ''}: ${text}`,
      ts: f.ts, audience: own ? this.audience(other) : null, reactions: new Map(),
    });
    this.append(node);
    if (plain) this.expire(f, plain.ttl);
  }

  /** The message a reply answers, quoted, with a way to it. */
  quote(seq) {
    const target = this.messages.get(Number(seq));
    if (!target || target.unsent || typeof target.plain !== 'string') return gone();
    const snippet = target.plain.length > 80 ? `${target.plain.slice(0, 80)}…` : target.plain;
    return el('button', {
      type: 'button', class: 'quote', 'data-reply-to': Number(seq),
      'aria-label': `Reply to ${target.from}: ${snippet}. Show it`,
      onclick: () => { target.node.scrollIntoView({ block: 'center' }); target.node.classList.add('flash'); setTimeout(() => target.node.classList.remove('flash'), 1500); },
    }, `↩ ${target.from}: ${snippet}`);
  }

  /**
   * A disappearing message goes, for everyone's client, `ttl` seconds after the server stamped
   * it. Kept by the clients, not by the server: a modified client or a copy can keep it.
   */
  expire(f, ttl) {
    const seconds = ttl;
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > 86400) return;
    const m = this.messages.get(f.seq);
    m?.node.querySelector('.meta')?.append(el('span', { class: 'ttl', title: 'Removed by every member\'s app when the time is up, not by the server: anyone can still copy it' }, `⏱ ${seconds >= 3600 ? `${seconds / 3600} h` : seconds >= 60 ? `${Math.round(seconds / 60)} min` : `${seconds} s`}`));
    setTimeout(() => this.disappear(f.seq), Math.max(0, f.ts + seconds * 1000 - Date.now()));
  }

  disappear(seq) {
    const m = this.messages.get(seq);
    if (!m) return;
    if (m.file) this.files.unsent(m.file);
    m.node.remove();
    this.messages.delete(seq);
    this.requote(seq);
    this.renderSeen();
  }

  /** Quotes of a message that went, was unsent or was edited show what is true now. */
  requote(seq) {
    for (const quote of $('messages').querySelectorAll(`.quote[data-reply-to="${Number(seq)}"]`)) {
      quote.replaceWith(this.quote(seq));
    }
  }

  /** A member's reaction, counted per emoji; only its latest say counts, in the message's own conversation. */
  onReact(f, plain, other) {
    const m = this.messages.get(Number(plain.target));
    const { emoji } = plain;
    if (!m || !m.reactions || (m.other ?? null) !== (other ?? null)) return;
    if (typeof emoji !== 'string' || emoji.length < 1 || emoji.length > 16 || typeof plain.on !== 'boolean') return;
    if (!m.reactions.has(emoji)) m.reactions.set(emoji, new Set());
    if (plain.on) m.reactions.get(emoji).add(f.from);
    else m.reactions.get(emoji).delete(f.from);
    this.renderReactions(Number(plain.target));
  }

  renderReactions(seq) {
    const m = this.messages.get(seq);
    m.node.querySelector('.reactions')?.remove();
    const chips = [...m.reactions.entries()].filter(([, who]) => who.size > 0).map(([emoji, who]) => {
      const mine = who.has(this.name);
      return el('button', {
        type: 'button', class: `chip${mine ? ' mine' : ''}`, 'aria-pressed': String(mine),
        'aria-label': `${emoji} ${who.size}: ${[...who].join(', ')}`,
        onclick: () => this.react(seq, emoji, !mine),
      }, `${emoji} ${who.size}`);
    });
    if (chips.length) m.node.append(el('div', { class: 'reactions' }, chips));
  }

  /**
   * An edit counts only from the message's own author, in its own conversation, and not from
   * someone who took the name after its author left.
   */
  onEdit(f, plain, other) {
    const m = this.messages.get(Number(plain.target));
    if (!m || !m.textNode || m.from !== f.from || m.authorGone || typeof plain.text !== 'string' || m.unsent) return;
    if ((m.other ?? null) !== (other ?? null)) return;
    if ((m.editSeq || 0) > f.seq) return;
    m.editSeq = f.seq;
    m.plain = plain.text;
    m.text = `${m.from}${m.other ? ` → ${m.other}` : ''}: ${plain.text} (edited)`;
    m.textNode.replaceChildren(...linkify(plain.text));
    if (!m.node.querySelector('.edited')) m.node.querySelector('.meta').append(el('span', { class: 'edited' }, 'edited'));
    this.requote(Number(plain.target));
  }

  /**
   * Who could read a message of ours when it was sent: the members then present (the one
   * member, for a direct message). Read marks say "read up to this seq", so a member who came
   * later, or who was never in the conversation, must not count as having seen it.
   */
  audience(other) {
    if (other) return new Set([other]);
    return new Set([...this.members.keys()].filter((name) => name !== this.name));
  }

  meta(f, own, other, seqs = [f.seq], actions = true) {
    const who = own ? 'your message' : `${f.from}'s message`;
    return el('div', { class: 'meta' },
      el('strong', {}, own ? 'You' : f.from),
      other ? el('span', {}, own ? `→ ${other} (private)` : '(private)') : '',
      el('time', { datetime: new Date(f.ts).toISOString() }, time(f.ts)),
      actions ? el('button', { type: 'button', class: 'act', 'aria-label': `Reply to ${who}`, onclick: () => this.startReply(f.seq) }, 'Reply') : '',
      actions ? el('button', { type: 'button', class: 'act', 'aria-label': `React to ${who}`, 'aria-expanded': 'false', onclick: (e) => this.picker(f.seq, e.currentTarget) }, 'React') : '',
      actions && own && seqs.length === 1 ? el('button', { type: 'button', class: 'act edit', 'aria-label': 'Edit your message', onclick: () => this.startEdit(f.seq) }, 'Edit') : '',
      own ? el('button', { type: 'button', class: 'unsend', 'aria-label': 'Unsend this message', onclick: () => seqs.forEach((seq) => this.send({ type: 'unsend', seq })) }, 'Unsend') : '',
    );
  }

  /** A row of emoji to react with, under the message; a second press closes it. */
  picker(seq, button) {
    const m = this.messages.get(seq);
    const open = m.node.querySelector('.picker');
    button.setAttribute('aria-expanded', String(!open));
    if (open) return void open.remove();
    const row = el('div', { class: 'picker', role: 'group', 'aria-label': 'Reactions' },
      REACTIONS.map((emoji) => el('button', {
        type: 'button', 'aria-label': `React with ${emoji}`,
        onclick: () => { row.remove(); button.setAttribute('aria-expanded', 'false'); this.react(seq, emoji, !m.reactions?.get(emoji)?.has(this.name)); },
      }, emoji)));
    m.node.append(row);
    row.querySelector('button').focus();
  }

  /** Sends a reaction in the message's own conversation (the room, or the DM it was in). */
  react(seq, emoji, on) {
    const m = this.messages.get(seq);
    if (!m || this.ended) return;
    this.sendSealed({ from: this.name, kind: 'react', target: seq, emoji, on }, m.other);
  }

  startReply(seq) {
    const m = this.messages.get(seq);
    if (!m || this.ended) return;
    this.compose = { reply: seq, other: m.other };
    if (m.other) this.startDm(m.other);
    else this.endDm();
    this.showContext(`Replying to ${m.from}: ${m.plain.slice(0, 60)}`);
  }

  startEdit(seq) {
    const m = this.messages.get(seq);
    if (!m || this.ended) return;
    this.compose = { edit: seq, other: m.other };
    if (m.other) this.startDm(m.other);
    else this.endDm();
    $('compose').value = m.plain;
    this.showContext('Editing your message');
  }

  showContext(text) {
    $('compose-context-text').textContent = text;
    $('compose-context').hidden = false;
    $('compose').focus();
  }

  endContext() {
    this.compose = null;
    $('compose-context').hidden = true;
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
      // Whoever takes the name next is someone else: it may not edit what was said under it.
      for (const m of this.messages.values()) if (m.from === f.name) m.authorGone = true;
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
    const who = [...this.readers.entries()]
      .filter(([name, s]) => s >= seq && last.audience?.has(name))
      .map(([name]) => name);
    if (who.length) last.node.append(el('div', { class: 'seen' }, `Seen by ${who.join(', ')}`));
  }

  onUnsent(f) {
    const m = this.messages.get(f.seq);
    if (!m) return;
    if (m.file) this.files.unsent(m.file);
    m.unsent = true;
    m.node.classList.add('unsent');
    m.node.replaceChildren(el('div', { class: 'text' }, f.by === (m.own ? this.name : null) ? 'You unsent a message.' : `A message was unsent by ${f.by}.`));
    m.text = '(unsent)';
    this.requote(f.seq);
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

  async sealFor(plain, to) {
    if (!to) return { frame: { type: 'send' }, body: await c.seal(this.encKey, this.roomId, plain) };
    const { key } = await this.dmKey(to);
    return { frame: { type: 'dm', to }, body: await c.seal(key, this.roomId, { ...plain, to }) };
  }

  /**
   * Sends to the room, or to `to` (the composer's DM partner when not given), and waits for the
   * echo; waits and tries again when rate limited.
   */
  async sendSealed(plain, to = this.dmTo) {
    for (;;) {
      const { frame, body } = await this.sealFor(plain, to);
      const txn = this.nextTxn();
      const echoed = new Promise((resolve) => this.pendingSends.set(txn, resolve));
      this.send({ ...frame, txn, body });
      const result = await Promise.race([echoed, new Promise((r) => setTimeout(() => r({ timeout: true }), 30000))]);
      this.pendingSends.delete(txn);
      if (!result.retryAfter) return result;
      await new Promise((r) => setTimeout(r, result.retryAfter));
    }
  }

  /** The composer's text: a message (a reply, perhaps, and perhaps disappearing) or an edit. */
  async sendText(text) {
    this.stopTyping();
    const context = this.compose;
    this.endContext();
    if (context?.edit !== undefined) {
      await this.sendSealed({ from: this.name, kind: 'edit', target: context.edit, text }, context.other);
      return;
    }
    const plain = { from: this.name, kind: 'text', text };
    if (context?.reply !== undefined) plain.reply_to = context.reply;
    const ttl = Number($('ttl').value);
    if (ttl > 0) plain.ttl = ttl;
    await this.sendSealed(plain, context ? context.other : this.dmTo);
  }

  async sendFile(file) {
    for await (const plain of chunks(file, this.name)) await this.sendSealed(plain);
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

  async kick(name) {
    if (await confirmDialog(`Remove ${name} from the room?`, 'Remove')) this.send({ type: 'kick', name });
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
    const lines = [...$('messages').children].map((n) => {
      const copy = n.cloneNode(true);
      for (const control of copy.querySelectorAll('button:not(.quote), .picker')) control.remove();
      return copy.textContent.replace(/\s+/g, ' ').trim();
    });
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
    $('dm-cancel').addEventListener('click', () => {
      // A reply or an edit belongs to its conversation: leaving the DM drops it.
      if (this.compose?.other) this.endContext();
      this.endDm();
    });
    $('compose-context-cancel').addEventListener('click', () => {
      if (this.compose?.edit !== undefined) compose.value = '';
      this.endContext();
    });
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
    $('delete-room-btn').addEventListener('click', async () => {
      if (await confirmDialog('Delete this room for everyone? This cannot be undone.', 'Delete room')) this.send({ type: 'delete_room' });
    });
    // Leaving on purpose: a close with 1000 (announced at once), and nothing kept for a reload.
    $('leave-btn').addEventListener('click', () => {
      this.ended = true;
      stay.clear();
      this.connection.close(1000);
      this.onLeave();
    });
    $('home-btn').addEventListener('click', () => this.onLeave());
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) {
        this.unread = 0;
        document.title = `${this.roomId} · Ephemera`;
        if (this.lastSeq) this.markRead(this.lastSeq);
      }
    });
  }
}

