// The home page: create a room, join one (from a link, whose key is read from the fragment and
// then taken out of the address bar), delete one, and the lobby of listed rooms.

import { api } from './api.js';
import * as c from './crypto.js';
import { $, el } from './dom.js';
import { ROOM_ID } from './protocol.js';


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

function initCreate(enterRoom) {
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

function initJoin(enterRoom) {
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

/** Wires the home page; `enterRoom(options)` opens the room view. */
export function initHome(enterRoom) {
  initTabs();
  initCreate(enterRoom);
  initJoin(enterRoom);
  initDelete();
  prefillFromLink();
  loadLobby();
}
