// Files in end-to-end encrypted chunks: what is sent for a file, and the assembly of the files
// other members send, bounded here, since other members choose what they send.

import * as c from './crypto.js';
import { el } from './dom.js';
import { FILE_CHUNK } from './protocol.js';

// What a client holds of files still arriving.
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const MAX_PARTIAL_BYTES = 128 * 1024 * 1024;
const MAX_PARTIAL_FILES = 16;
const MAX_PARTIAL_FILES_PER_SENDER = 4;
// A file none of whose chunks came for this long is given up, so that files left unfinished do
// not keep the places of the next ones.
const PARTIAL_FILE_IDLE_MS = 60 * 1000;

/** The plaintexts of a file's chunks, in order, for `from` to seal and send one by one. */
export async function* chunks(file, from) {
  const id = c.randomKey(16);
  const bytes = new Uint8Array(await file.arrayBuffer());
  const total = Math.max(1, Math.ceil(bytes.length / FILE_CHUNK));
  for (let index = 0; index < total; index++) {
    const data = c.b64uEncode(bytes.subarray(index * FILE_CHUNK, (index + 1) * FILE_CHUNK));
    yield {
      from, kind: 'file',
      file: { id, name: file.name, mime: file.type || 'application/octet-stream', size: bytes.length, index, total, data },
    };
  }
}

/** The files arriving in a room, each shown in the room's message list as it assembles. */
export class Incoming {
  /**
   * `view` gives `meta(f, own, other, seqs)`, `append(node, conversation, incoming)`,
   * `notice(text)`, `audience(other)` and `messages`.
   */
  constructor(view) {
    this.view = view;
    this.files = new Map(); // sender, conversation and file id -> {node, meta, parts, got, bytes, seqs}
    this.partialBytes = 0;
    this.refused = new Set(); // keys of files refused, so that their other chunks are quiet
    this.urls = new Map(); // seq -> object URL shown for it
  }

  /**
   * A file arrives chunk by chunk. Its chunks are matched by who sent them, in which
   * conversation, and the file's id, so no other member can slip chunks into it; its name, type,
   * size and number of chunks are the first chunk's, and a chunk that disagrees is dropped.
   */
  chunk(f, file, own, other) {
    const key = JSON.stringify([f.from, other, String(file.id)]);
    if (this.refused.has(key)) return;
    let entry = this.files.get(key);
    if (!entry) {
      entry = this.start(key, f, file, own, other);
      if (!entry) return;
    }
    const { meta } = entry;
    entry.seqs.push(f.seq);
    this.view.messages.set(f.seq, {
      node: entry.node, own, from: f.from, other, text: `${f.from}: [file ${meta.name}]`, ts: f.ts, file: key, audience: own ? this.view.audience(other) : null,
    });
    const index = Number(file.index);
    const fits = Number(file.total) === meta.total && Number(file.size) === meta.size
      && Number.isInteger(index) && index >= 0 && index < meta.total;
    if (entry.done || !fits || entry.parts[index] !== undefined) return;
    let data;
    try { data = c.b64uDecode(file.data); } catch { return; }
    if (data.length > FILE_CHUNK || entry.bytes + data.length > meta.size || this.partialBytes + data.length > MAX_PARTIAL_BYTES) {
      this.drop(entry, 'too large');
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
    this.finish(entry);
  }

  /** The first chunk of a file: checks it, and makes room for it. */
  start(key, f, file, own, other) {
    const now = Date.now();
    for (const stale of this.files.values()) {
      if (!stale.done && now - stale.last > PARTIAL_FILE_IDLE_MS) this.drop(stale, 'it stopped arriving');
    }
    const size = Number(file.size);
    const total = Number(file.total);
    const sane = Number.isSafeInteger(size) && size >= 0 && size <= MAX_FILE_BYTES
      && Number.isSafeInteger(total) && total >= Math.max(1, Math.ceil(size / FILE_CHUNK)) && total <= size + 1;
    const fromSender = [...this.files.values()].filter((e) => e.from === f.from && !e.done).length;
    const partial = [...this.files.values()].filter((e) => !e.done).length;
    if (!sane || fromSender >= MAX_PARTIAL_FILES_PER_SENDER || partial >= MAX_PARTIAL_FILES) {
      this.view.notice(`A file from ${f.from} was refused: ${sane ? 'too many files at once' : 'it is not a valid file'}.`);
      if (this.refused.size >= 256) this.refused.clear();
      this.refused.add(key);
      return null;
    }
    const body = el('div', { class: 'text' }, `receiving ${file.name}…`);
    const seqs = [];
    const node = el('div', { class: `msg${own ? ' own' : ''}${other ? ' dm' : ''}`, 'data-seq': f.seq }, this.view.meta(f, own, other, seqs, false), body);
    const entry = {
      from: f.from, node, body, seqs, parts: new Array(total), got: 0, bytes: 0, done: false, last: now,
      meta: { name: String(file.name), mime: String(file.mime || 'application/octet-stream'), size, total },
    };
    this.files.set(key, entry);
    this.view.append(node, other || '', !own);
    return entry;
  }

  /** Every chunk is there: the file is shown, inline for images, audio and video. */
  finish(entry) {
    const { meta } = entry;
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
  drop(entry, why) {
    if (entry.parts) this.partialBytes -= entry.bytes;
    entry.parts = null;
    entry.done = true;
    entry.body.textContent = `${entry.meta.name} was dropped: ${why}.`;
  }

  /** A file's message was unsent: its object URLs go, and a file still arriving is dropped. */
  unsent(key) {
    const entry = this.files.get(key);
    if (!entry) return;
    for (const seq of entry.seqs) {
      const url = this.urls.get(seq);
      if (url) URL.revokeObjectURL(url);
      this.urls.delete(seq);
    }
    if (!entry.done) this.drop(entry, 'unsent');
  }
}
