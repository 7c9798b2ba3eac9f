// A room's socket: the join, the reconnect with backoff and the `session` token, and the end
// when a close is final. The room gets typed frames (`onFrame`) and the end (`onEnd`).

import { isFinal, refusalText } from './protocol.js';

export class Connection {
  /**
   * `join()` returns the join frame's fields for each (re)connect; `session` is a token kept
   * from before a reload; `onEnd(text, code)` hears a final close with its error code;
   * `onState(text, online)` says how the socket is.
   */
  constructor({ roomId, session, join, onFrame, onEnd, onState }) {
    Object.assign(this, { roomId, join, onFrame, onEnd, onState });
    this.session = session || null;
    this.attempt = 0;
    this.ended = false;
    this.lastError = null;
  }

  open() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/ws/${encodeURIComponent(this.roomId)}`);
    this.ws = ws;
    this.onState(this.attempt ? 'reconnecting…' : 'connecting…', false);
    ws.addEventListener('open', () => {
      const join = { type: 'join', ...this.join() };
      if (this.session) join.session = this.session;
      ws.send(JSON.stringify(join));
    });
    ws.addEventListener('message', (e) => {
      const frame = JSON.parse(e.data);
      if (frame.type === 'welcome') {
        this.session = frame.session;
        this.attempt = 0;
      }
      if (frame.type === 'error') this.lastError = frame;
      this.onFrame(frame).catch((err) => console.error(err));
    });
    ws.addEventListener('close', (e) => this.closed(e));
  }

  closed(e) {
    if (this.ended) return;
    if (isFinal(e.code)) {
      const code = e.reason || this.lastError?.code || '';
      return this.onEnd(refusalText(e.code, e.reason, this.lastError), code);
    }
    this.attempt += 1;
    const delay = Math.min(30000, 1000 * 2 ** Math.min(this.attempt - 1, 5)) * (0.75 + Math.random() / 2);
    this.onState(`disconnected; retrying in ${Math.round(delay / 1000)} s`, false);
    setTimeout(() => this.open(), delay);
  }

  /** Stops for good: no reconnect after this. */
  close(code) {
    this.ended = true;
    try { this.ws.close(code); } catch { /* already closed */ }
  }

  send(frame) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }
}
