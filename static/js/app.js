// The Ephemera web client's entry: the home page, and the room view it opens. Modules by
// concern: home.js, room.js (the view), transport.js (the socket), files.js, crypto.js (the
// contract's derivations and envelopes), protocol.js, api.js, dom.js. No build step.

import { $ } from './dom.js';
import { initHome } from './home.js';
import { Room } from './room.js';

let current = null;

async function enterRoom(options) {
  $('home').hidden = true;
  $('room').hidden = false;
  current = new Room(options);
  await current.start();
}

initHome(enterRoom);
