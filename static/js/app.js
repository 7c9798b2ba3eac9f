// The Ephemera web client's entry: the home page, and the room view it opens. Modules by
// concern: home.js, room.js (the view), transport.js (the socket), files.js, stay.js (what a
// tab keeps for a reload), crypto.js (the contract's derivations and envelopes), protocol.js,
// api.js, dom.js. No build step.

import { initHome, joinFailed } from './home.js';
import { Room } from './room.js';
import * as stay from './stay.js';

/** Going home: a fresh page, with nothing of the room left in memory. */
function home() {
  location.href = '/';
}

/**
 * Enters a room; resolves `{ ok }` once the room answered, or `{ ok: false, code, text }` when
 * the join was refused (the home page stays, with what was typed). The address becomes the
 * room's link (without its key), so that a reload comes back here.
 */
export async function enterRoom(options) {
  const room = new Room({ ...options, onLeave: home });
  const outcome = await room.start();
  if (outcome.ok && location.pathname !== `/r/${encodeURIComponent(options.roomId)}`) {
    history.replaceState(null, '', `/r/${encodeURIComponent(options.roomId)}`);
  }
  return outcome;
}

/** A reload, or a tab the browser restored: back into the room this tab was in, quietly. */
async function rejoin() {
  const match = location.pathname.match(/^\/r\/([^/]+)$/);
  const saved = match && stay.load(decodeURIComponent(match[1]));
  if (!saved) {
    stay.clear();
    return;
  }
  const outcome = await enterRoom({ roomId: saved.roomId, saved });
  if (!outcome.ok) joinFailed(outcome, { roomId: saved.roomId, name: saved.name, admin: Boolean(saved.admin) });
}

initHome(enterRoom);
rejoin();
