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
    // '' is the room; each other key is a member this person exchanged private messages with.
    this.conversations = new Map([['', { unread: 0, lastSeq: 0 }]]);
    this.active = '';
    // Members this person verified in this tab: name -> the public key they verified.
    this.verified = new Map(Object.entries(saved?.verified || {}));
    this.keyChanged = new Set();
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
  keep(session = this.session) {
    this.session = session;
    stay.save({
      roomId: this.roomId, name: this.name, auth: this.auth, enc: c.b64uEncode(this.enc),
      dm: this.jwk, pubkey: this.pubkey, session, admin: this.adminPassword || null,
      verified: Object.fromEntries(this.verified),
    });
  }

  /** The member the composer writes to privately, or null for the whole room. */
  get dmTo() {
    return this.active || null;
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
    $('compose-to-text').textContent = 'This room is over: nothing more can be sent.';
    $('dm-cancel').hidden = true;
    $('verify-partner').hidden = true;
    for (const button of $('messages').querySelectorAll('.unsend, .act, .picker')) button.remove();
    for (const chip of $('messages').querySelectorAll('.reactions button')) chip.disabled = true;
    $('member-list').replaceChildren(el('li', { class: 'hint' }, 'You are no longer in this room.'));
    $('member-count').textContent = '';
    $('member-count-short').textContent = '';
    $('compose').placeholder = '';
    $('typing').textContent = '';
    $('delete-room-btn').hidden = true;
    $('lock-btn').hidden = true;
    $('broadcast-btn').hidden = true;
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
      case 'members': return this.onMembers(f);
      case 'kicked': return this.end(`You were removed from the room by ${f.by}.`);
      case 'room_deleted': return this.end(f.reason === 'expired'
        ? 'The room\'s time is up: it has ended. Nothing said in it remains.'
        : 'The room was deleted by its admin. Nothing said in it remains.');
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
    // A server that predates room options sends none: the defaults.
    this.options = f.options ?? { lifetime: 'rolling', max_members: 0, unsend: true };
    this.locked = f.locked === true;
    this.renderAdmin();
    this.memberCount = f.member_count ?? f.members.length;
    // A crowd's first page is a full one: its length is the page size.
    this.pageSize = this.memberCount > f.members.length ? f.members.length : null;
    this.nextPage = this.pageSize ? 1 : null;
    this.setMembers(f.members);
    this.renderTarget();
    this.state('connected', true);
    if (again) this.notice('Reconnected.');
    $('compose').focus();
  }

  /**
   * A page of the member list. A small room's list is whole (one page) and replaces what this
   * page holds; a crowd's pages add to it (docs/protocol.md, "Crowds").
   */
  onMembers(f) {
    const page = f.page ?? 0;
    const pages = f.pages ?? 1;
    this.memberCount = f.total ?? f.members.length;
    if (page >= pages) return undefined; // past the last page: the room shrank meanwhile
    if (pages === 1) {
      this.pageSize = null;
      return this.setMembers(f.members);
    }
    if (page + 1 < pages) this.pageSize = f.members.length;
    this.nextPage = page + 1 < pages ? page + 1 : null;
    for (const m of f.members) {
      this.members.set(m.name, m);
      this.checkKey(m);
    }
    this.renderMembers();
    this.renderTarget();
    return undefined;
  }

  setMembers(list) {
    this.members = new Map(list.map((m) => [m.name, m]));
    for (const m of this.members.values()) this.checkKey(m);
    this.renderMembers();
    this.renderConversations();
  }

  /**
   * A member this person verified shows up with another public key: the mark goes, and both
   * the room and the private conversation say so, until they verify again.
   */
  checkKey(m) {
    const verified = this.verified.get(m.name);
    if (!verified || !m.pubkey || verified === m.pubkey) return;
    this.verified.delete(m.name);
    this.keyChanged.add(m.name);
    this.keep();
    const text = `⚠ ${m.name}'s key is not the one you verified: it is someone else, or the same person on a new device or tab. Verify again before you trust private messages with ${m.name}.`;
    this.notice(text, '');
    if (this.conversations.has(m.name)) this.notice(text, m.name);
  }

  /** What only an admin may do, and the lock, as the menu and the header show them. */
  renderAdmin() {
    $('delete-room-btn').hidden = !this.admin;
    $('lock-btn').hidden = !this.admin;
    $('broadcast-btn').hidden = !this.admin;
    $('lock-btn').textContent = this.locked ? 'Unlock room' : 'Lock room';
    $('lock-btn').setAttribute('aria-pressed', String(this.locked));
    $('room-options').textContent = describeOptions(this.options) + (this.locked ? ' · locked' : '');
  }

  async makeAdmin(name) {
    if (await confirmDialog(`Make ${name} an admin? They can then remove people, lock and delete the room for as long as they stay.`, 'Make admin', false)) {
      this.send({ type: 'make_admin', name });
    }
  }

  renderMembers() {
    const items = [...this.members.values()].map((m) => {
      const me = m.name === this.name;
      return el('li', {},
        el('span', { class: 'who' }, el('strong', {}, m.name), me ? ' (you)' : '', m.admin ? el('span', { class: 'badge' }, 'admin') : '', me ? '' : this.trust(m.name)),
        !me && m.pubkey ? el('button', { type: 'button', onclick: () => this.openConversation(m.name), 'aria-label': `Private message to ${m.name}` }, 'Message') : '',
        !me && m.pubkey ? el('button', { type: 'button', onclick: () => this.verify(m.name), 'aria-label': `Verify ${m.name}` }, 'Verify') : '',
        !me && this.admin && !m.admin ? el('button', { type: 'button', onclick: () => this.makeAdmin(m.name), 'aria-label': `Make admin ${m.name}` }, 'Make admin') : '',
        !me && this.admin ? el('button', { type: 'button', class: 'danger', onclick: () => this.kick(m.name), 'aria-label': `Remove ${m.name}` }, 'Remove') : '',
      );
    });
    const count = Math.max(this.memberCount || 0, this.members.size);
    if (count > this.members.size) {
      // A crowd: the list comes a page at a time, when asked for.
      items.push(el('li', { class: 'hint' }, `${count - this.members.size} more not shown. `,
        this.nextPage ? el('button', { type: 'button', onclick: () => this.send({ type: 'members', page: this.nextPage }) }, 'Show more') : ''));
    }
    $('member-list').replaceChildren(...items);
    $('member-count').textContent = `(${count})`;
    $('member-count-short').textContent = `(${count})`;
  }

  /** The verified mark, or the warning that a verified member's key changed. */
  /** Verified in this tab, and still with the key that was verified. */
  isVerified(name) {
    return this.verified.has(name) && this.verified.get(name) === this.members.get(name)?.pubkey;
  }

  trust(name) {
    if (this.isVerified(name)) return el('span', { class: 'verified', title: 'You compared safety codes with this member in this tab' }, '✓ verified');
    if (this.keyChanged.has(name)) return el('span', { class: 'key-changed' }, '⚠ key changed');
    return '';
  }

  /** The pair key with `other` for the public key it has now (a new key, a new derivation). */
  dmKey(other) {
    const them = this.members.get(other);
    if (!them?.pubkey) return Promise.reject(new Error(`${other} has no DM key here`));
    const cached = this.dmKeys.get(other);
    if (cached?.pubkey === them.pubkey) return cached.promise;
    const promise = (async () => {
      const { key } = await c.dmKeyRaw(this.privateKey, them.pubkey, this.roomId, this.name, other);
      return { key: await c.aesKey(key) };
    })();
    this.dmKeys.set(other, { pubkey: them.pubkey, promise });
    return promise;
  }

  /**
   * Shows the safety code to read to `name` out of band; when the person says the codes match,
   * the member is verified (for this public key, in this tab).
   */
  async verify(name) {
    const them = this.members.get(name);
    if (!them?.pubkey || this.ended) return;
    const code = await c.safetyCode(this.roomId, [this.name, this.pubkey], [name, them.pubkey]);
    const dialog = $('verify-dialog');
    const already = this.verified.get(name) === them.pubkey;
    $('verify-title').textContent = `Verify ${name}`;
    $('verify-how').textContent = `Read this code to ${name} by phone or in person, not in this chat. If ${name} sees the same digits, nobody stands between your private messages.`;
    $('verify-code').textContent = code;
    $('verify-state').textContent = already ? `You verified ${name} in this tab.` : '';
    $('verify-ok').hidden = already;
    dialog.returnValue = '';
    dialog.addEventListener('close', () => {
      if (dialog.returnValue !== 'ok' || this.members.get(name)?.pubkey !== them.pubkey) return;
      this.verified.set(name, them.pubkey);
      this.keyChanged.delete(name);
      this.keep();
      this.renderMembers();
      this.renderConversations();
      this.announce(`${name} is verified.`);
    }, { once: true });
    dialog.showModal();
    (already ? $('verify-cancel') : $('verify-ok')).focus();
  }

  async onMessage(f, dm) {
    const own = f.from === this.name;
    const other = dm ? (own ? f.to : f.from) : null;
    // In a crowd the sender may be on no page this client holds, or hold a name whose earlier
    // owner's key this page still has (a crowd's leaves are not named): the key comes with the
    // DM, and a verified name with another key is flagged.
    if (dm && !own && typeof f.pubkey === 'string' && this.members.get(f.from)?.pubkey !== f.pubkey) {
      const member = { name: f.from, admin: this.members.get(f.from)?.admin ?? false, pubkey: f.pubkey };
      this.members.set(f.from, member);
      this.checkKey(member);
      this.renderMembers();
      this.renderConversations();
      this.renderTarget();
    }
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
    const conversation = this.conversation(other || '');
    conversation.lastSeq = Math.max(conversation.lastSeq, f.seq);
    if (!own && (plain === null || kind === 'text' || kind === 'file')) this.noticeIncoming(f.from);
    if ((other || '') === this.active) this.markRead(f.seq);
  }

  addMessage(f, plain, own, other) {
    const text = plain === null
      ? '⚠ This message could not be decrypted.'
      : typeof plain.text === 'string' ? plain.text : '(unsupported message)';
    const textNode = el('div', { class: 'text' }, linkify(text));
    const node = el('div', { class: `msg${own ? ' own' : ''}${other ? ' dm' : ''}${plain === null ? ' failed' : ''}`, 'data-seq': f.seq },
      this.meta(f, own, other, [f.seq], plain !== null),
      plain?.reply_to !== undefined ? this.quote(plain.reply_to) : '',
      textNode,
    );
    this.messages.set(f.seq, {
      node, own, from: f.from, other, textNode, plain: text, text: `${f.from}${other ? ` → ${f.to}` : ''}: ${text}`,
      ts: f.ts, audience: own ? this.audience(other) : null, reactions: new Map(),
    });
    this.append(node, other || '', !own);
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
      own && this.options?.unsend !== false ? el('button', { type: 'button', class: 'unsend', 'aria-label': 'Unsend this message', onclick: () => seqs.forEach((seq) => this.send({ type: 'unsend', seq })) }, 'Unsend') : '',
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
    this.openConversation(m.other || '');
    this.compose = { reply: seq, other: m.other };
    this.showContext(`Replying to ${m.from}: ${m.plain.slice(0, 60)}`);
  }

  startEdit(seq) {
    const m = this.messages.get(seq);
    if (!m || this.ended) return;
    this.openConversation(m.other || '');
    this.compose = { edit: seq, other: m.other };
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

  /**
   * Adds a line to a conversation: shown if it is the open one, otherwise kept hidden and, when
   * someone else said it, counted unread there and announced.
   */
  append(node, conversation = '', incoming = false) {
    const list = $('messages');
    const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    node.dataset.conv = conversation;
    node.hidden = conversation !== this.active;
    list.append(node);
    if (node.hidden && incoming) {
      this.conversation(conversation).unread += 1;
      this.renderConversations();
      this.announce(conversation ? `New private message from ${conversation}` : 'New message in the room');
    } else if (atEnd) {
      list.scrollTop = list.scrollHeight;
    }
  }

  conversation(name) {
    if (!this.conversations.has(name)) {
      this.conversations.set(name, { unread: 0, lastSeq: 0 });
      this.renderConversations();
    }
    return this.conversations.get(name);
  }

  /** The room, then one entry per member this person talks with privately, with unread counts. */
  renderConversations() {
    const items = [...this.conversations.entries()].map(([name, conv]) => {
      const here = name === '' || this.members.has(name);
      const label = name === '' ? 'Room' : name;
      return el('li', {}, el('button', {
        type: 'button', class: `conv${name ? ' private' : ''}`, 'data-conv': name,
        'aria-current': name === this.active ? 'true' : null,
        onclick: () => this.openConversation(name),
      },
      label,
      name ? el('span', { class: 'visually-hidden' }, ', private') : '',
      name && this.isVerified(name) ? el('span', { class: 'verified', title: 'verified' }, ' ✓') : '',
      name && this.keyChanged.has(name) ? el('span', { class: 'key-changed' }, ' ⚠') : '',
      name && !here ? el('span', { class: 'hint' }, ' (left)') : '',
      conv.unread ? el('span', { class: 'unread' }, String(conv.unread), el('span', { class: 'visually-hidden' }, ' unread')) : ''));
    });
    $('conv-list').replaceChildren(...items);
    $('conversations').hidden = this.conversations.size < 2;
  }

  /**
   * Opens a conversation: the room ('') or the private one with `name`. The log shows only its
   * lines, and the composer says plainly where what is typed will go.
   */
  openConversation(name) {
    if (name && !this.conversations.has(name) && !this.members.get(name)?.pubkey) return;
    const changed = name !== this.active;
    if (changed && this.compose) this.endContext();
    this.active = name;
    // On a phone the member list covers the log: choosing someone in it closes it.
    $('members').classList.remove('open');
    $('members-toggle').setAttribute('aria-expanded', 'false');
    const conv = this.conversation(name);
    conv.unread = 0;
    for (const node of $('messages').children) node.hidden = node.dataset.conv !== name;
    this.renderConversations();
    this.renderTarget();
    const list = $('messages');
    if (changed) list.scrollTop = list.scrollHeight;
    if (conv.lastSeq) this.markRead(conv.lastSeq);
    if (!this.ended) $('compose').focus();
  }

  /** Where the composer sends: the whole room, or one member privately (and whether they can hear). */
  renderTarget() {
    if (this.ended) return;
    const name = this.active;
    const here = !name || this.members.get(name)?.pubkey;
    $('composer').classList.toggle('private', Boolean(name));
    $('compose-to-text').textContent = !name
      ? `To everyone in the room (${Math.max(this.memberCount || 0, this.members.size)})`
      : here ? `Private to ${name}: only ${name} can read it` : `${name} has left: nothing more can be sent to them`;
    $('compose').placeholder = name ? `Message ${name} privately` : 'Message everyone';
    $('dm-cancel').hidden = !name;
    $('verify-partner').hidden = !name || !here;
    $('verify-partner').textContent = this.isVerified(name) ? '✓ Verified' : 'Verify';
    $('verify-partner').setAttribute('aria-label', `Verify ${name}`);
    for (const control of $('composer').querySelectorAll('textarea, button[type=submit], select')) control.disabled = !here;
  }

  onBot(f) {
    if (Number.isInteger(f.members)) this.memberCount = f.members;
    // A crowd that shrank back to one page: its leaves were counted, not named, so the list is
    // asked for again, whole.
    const smallAgain = this.pageSize ? f.members <= this.pageSize : f.members < this.members.size;
    if (f.event === 'summary' && smallAgain) {
      this.pageSize = null;
      this.send({ type: 'members' });
    }
    const line = () => el('div', { class: 'msg bot', role: 'note' }, el('span', {}, f.text), ' ', el('time', { class: 'hint', datetime: new Date(f.ts).toISOString() }, time(f.ts)));
    if ((f.event === 'join' || f.event === 'admin') && f.member) {
      this.members.set(f.member.name, f.member);
      if (f.event === 'join') this.checkKey(f.member);
      if (f.event === 'admin' && f.member.name === this.name) this.admin = true;
    }
    if (f.event === 'lock' || f.event === 'unlock') this.locked = f.event === 'lock';
    if (f.event === 'admin' || f.event === 'lock' || f.event === 'unlock') this.renderAdmin();
    const gone = (f.event === 'leave' || f.event === 'kick') && f.name;
    if (gone) {
      // Whoever takes the name next is someone else: it may not edit what was said under it.
      for (const m of this.messages.values()) if (m.from === f.name) m.authorGone = true;
      this.members.delete(f.name);
      this.dmKeys.delete(f.name);
    }
    const conversation = f.name || f.member?.name;
    if (f.event !== 'welcome' && conversation && this.conversations.has(conversation)) this.append(line(), conversation);
    if (f.event !== 'welcome') {
      this.renderMembers();
      this.renderConversations();
      this.renderTarget();
    }
    this.append(line());
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

  /** "Seen by" under this person's latest message in each conversation. */
  renderSeen() {
    document.querySelectorAll('.seen').forEach((n) => n.remove());
    const latest = new Map();
    for (const [seq, m] of this.messages) if (m.own && !m.unsent) latest.set(m.other || '', [seq, m]);
    for (const [seq, last] of latest.values()) {
      const who = [...this.readers.entries()]
        .filter(([name, s]) => s >= seq && last.audience?.has(name))
        .map(([name]) => name);
      if (who.length && !last.node.querySelector('.seen')) last.node.append(el('div', { class: 'seen' }, `Seen by ${who.join(', ')}`));
    }
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
    // A send refused for good (its partner left, say): whoever waits for its echo stops waiting.
    if (f.txn && this.pendingSends.has(f.txn)) {
      this.pendingSends.get(f.txn)({ error: f.code });
      this.pendingSends.delete(f.txn);
    }
    if (['bad_request', 'forbidden', 'no_such_member', 'no_such_message', 'rate_limited', 'store_unavailable'].includes(f.code)) {
      this.notice(f.message);
    }
  }

  /** A line from this client (not from the room's bot), in a conversation (the open one by default). */
  notice(text, conversation = this.active) {
    const node = el('div', { class: 'msg bot', role: 'note' }, text);
    this.append(node, conversation);
  }

  /** Said once to screen readers, politely. */
  announce(text) {
    $('announce').textContent = '';
    setTimeout(() => { $('announce').textContent = text; }, 50);
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

  /**
   * An admin's word to every member, each as a private message under that pair's key (a member
   * without a DM key cannot get one, and is named); one after the other, so the room's rate
   * limit is kept.
   */
  async messageEach(text) {
    const others = [...this.members.values()].filter((m) => m.name !== this.name);
    const missed = others.filter((m) => !m.pubkey).map((m) => m.name);
    let sent = 0;
    for (const m of others.filter((o) => o.pubkey)) {
      // A member who left meanwhile (or whose key will not do) is named, not fatal to the rest.
      try {
        const result = await this.sendSealed({ from: this.name, kind: 'text', text }, m.name);
        if (result?.timeout || result?.error) missed.push(m.name);
        else sent += 1;
      } catch {
        missed.push(m.name);
      }
    }
    this.notice(`Sent privately to ${sent} ${sent === 1 ? 'member' : 'members'}.`
      + (missed.length ? ` Not to ${missed.join(', ')}.` : ''));
  }

  async sendFile(file, to = this.dmTo) {
    for await (const plain of chunks(file, this.name)) await this.sendSealed(plain, to);
  }

  /**
   * Files pasted or dropped go after a yes in the page's dialog, which names them and where
   * they go: a screenshot pasted by mistake is not sent to a whole room.
   */
  async offerFiles(files) {
    const list = [...files];
    if (!list.length || this.ended) return;
    const to = this.dmTo;
    const names = list.map((f) => `${f.name || 'pasted file'} (${Math.max(1, Math.ceil(f.size / 1024))} KiB)`).join(', ');
    if (!(await confirmDialog(`Send ${names} ${to ? `privately to ${to}` : 'to everyone in the room'}?`, 'Send', false))) return;
    for (const file of list) await this.sendFile(file, to);
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
    $('dm-cancel').addEventListener('click', () => this.openConversation(''));
    $('verify-partner').addEventListener('click', () => this.verify(this.active));
    compose.addEventListener('paste', (e) => {
      if (!e.clipboardData?.files.length) return;
      e.preventDefault();
      this.offerFiles(e.clipboardData.files);
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
    const view = $('room');
    view.addEventListener('dragover', (e) => { e.preventDefault(); if (!this.ended) view.classList.add('dragging'); });
    view.addEventListener('dragleave', (e) => { if (!view.contains(e.relatedTarget)) view.classList.remove('dragging'); });
    view.addEventListener('drop', (e) => {
      e.preventDefault();
      view.classList.remove('dragging');
      this.offerFiles(e.dataTransfer.files);
    });
    $('export-btn').addEventListener('click', () => this.exportConversation());
    $('notify-btn').addEventListener('click', async () => {
      if ('Notification' in window) $('notify-btn').textContent = (await Notification.requestPermission()) === 'granted' ? 'Notifying' : 'Notify me';
    });
    $('members-toggle').addEventListener('click', () => {
      const open = $('members').classList.toggle('open');
      $('members-toggle').setAttribute('aria-expanded', String(open));
    });
    const menu = (open) => {
      $('room-actions').classList.toggle('open', open);
      $('menu-toggle').setAttribute('aria-expanded', String(open));
    };
    $('menu-toggle').addEventListener('click', () => menu(!$('room-actions').classList.contains('open')));
    $('room-actions').addEventListener('click', (e) => { if (e.target.closest('button')) menu(false); });
    view.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && $('room-actions').classList.contains('open')) {
        menu(false);
        $('menu-toggle').focus();
      }
    });
    $('lock-btn').addEventListener('click', () => this.send({ type: this.locked ? 'unlock' : 'lock' }));
    $('broadcast-btn').addEventListener('click', () => {
      const dialog = $('broadcast-dialog');
      $('broadcast-text').value = '';
      dialog.returnValue = '';
      dialog.showModal();
      $('broadcast-text').focus();
    });
    $('broadcast-dialog').addEventListener('close', () => {
      const text = $('broadcast-text').value.trim();
      if ($('broadcast-dialog').returnValue === 'ok' && text) this.messageEach(text);
      $('broadcast-btn').focus();
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

/** The room's options as its header says them: only what differs from an ordinary room. */
function describeOptions(options) {
  const parts = [];
  if (options.lifetime === 'fixed' && options.ends_at) {
    parts.push(`ends ${new Date(options.ends_at).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' })}`);
  }
  if (options.lifetime === 'empty') parts.push('vanishes when empty');
  if (options.max_members > 0) parts.push(`up to ${options.max_members} people`);
  if (options.unsend === false) parts.push('no unsend');
  return parts.map((p) => ` · ${p}`).join('');
}
