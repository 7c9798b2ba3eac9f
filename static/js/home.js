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
  $('create-generate').addEventListener('click', () => { $('create-room').value = c.randomRoomId(); });
  let created = null;
  $('panel-create').addEventListener('submit', async (e) => {
    e.preventDefault();
    const error = $('create-error');
    error.textContent = '';
    const roomId = $('create-room').value.trim() || c.randomRoomId();
    const key = $('create-key').value;
    const admin = $('create-admin').value;
    if (!ROOM_ID.test(roomId)) return void (error.textContent = 'Room IDs are 3 to 64 letters, digits, - or _.');
    if (key.length < 5) return void (error.textContent = 'The room key needs at least 5 characters.');
    if (admin.length < 8) return void (error.textContent = 'The admin password needs at least 8 characters.');
    if (admin === key) return void (error.textContent = 'The admin password must differ from the room key.');
    const max = $('create-max').value.trim();
    if (max && !(Number.isInteger(Number(max)) && Number(max) >= 2)) {
      return void (error.textContent = 'At least 2 people, or leave it empty.');
    }
    error.textContent = 'Deriving keys…';
    try {
      const { auth } = await c.deriveRoomSecrets(roomId, key);
      const title = $('create-title').value.trim();
      const room = await api('POST', '/api/rooms', {
        room_id: roomId, auth, admin_password: admin, listed: $('create-listed').checked, title: title || null,
        ...($('create-lifetime').value ? { lifetime: $('create-lifetime').value } : {}),
        ...(max ? { max_members: Number(max) } : {}),
        unsend: $('create-unsend').checked,
      });
      error.textContent = '';
      created = { roomId: room.room_id, key, admin };
      $('share-link').value = `${location.origin}/r/${encodeURIComponent(room.room_id)}#key=${encodeURIComponent(key)}`;
      $('create-result').hidden = false;
      $('create-name').focus();
      loadLobby();
    } catch (err) {
      error.textContent = err.code === 'room_exists' ? 'That room ID is taken; pick another.'
        : err.code === 'invalid_options' ? `This server does not allow that: ${err.message}.` : err.message;
    }
  });
  $('share-copy').addEventListener('click', () => copyField($('share-link'), $('share-copy')));
  $('create-enter').addEventListener('click', async () => {
    const name = $('create-name').value.trim();
    if (!created || !name) return void $('create-name').focus();
    $('create-error').textContent = 'Joining…';
    $('create-enter').disabled = true;
    try {
      const outcome = await enterRoom({ roomId: created.roomId, key: created.key, name, adminPassword: created.admin });
      $('create-error').textContent = outcome.ok ? '' : outcome.text;
    } finally {
      $('create-enter').disabled = false;
    }
  });
}

/** Copies a read-only field's text, saying so on its button. */
async function copyField(input, button) {
  input.select();
  try { await navigator.clipboard.writeText(input.value); } catch { document.execCommand('copy'); }
  button.textContent = 'Copied';
}

/**
 * Shows a quick room's link and admin password, once: the dialog forgets them when it closes
 * (the tab keeps the admin password only as stay.js says, for a reload).
 */
function showQuickRoom(link, adminPassword) {
  const dialog = $('quick-dialog');
  $('quick-link').value = link;
  $('quick-admin').value = adminPassword;
  $('quick-link-copy').textContent = 'Copy';
  $('quick-admin-copy').textContent = 'Copy';
  dialog.addEventListener('close', () => {
    $('quick-link').value = '';
    $('quick-admin').value = '';
    $('compose').focus();
  }, { once: true });
  dialog.showModal();
  $('quick-link-copy').focus();
}

/** One click: a room with a generated ID, key and admin password, entered as its admin. */
function initQuick(enterRoom) {
  $('quick-link-copy').addEventListener('click', () => copyField($('quick-link'), $('quick-link-copy')));
  $('quick-admin-copy').addEventListener('click', () => copyField($('quick-admin'), $('quick-admin-copy')));
  $('quick-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const error = $('quick-error');
    const input = $('quick-name');
    const name = input.value.trim();
    input.toggleAttribute('aria-invalid', !name);
    if (!name) {
      error.textContent = 'Enter your name: the room shows it to the people you invite.';
      return void input.focus();
    }
    const roomId = c.randomRoomId();
    const key = c.randomKey(22);
    const adminPassword = c.randomKey(20);
    const button = $('quick-btn');
    button.disabled = true;
    error.textContent = 'Creating the room…';
    try {
      const { auth } = await c.deriveRoomSecrets(roomId, key);
      await api('POST', '/api/rooms', { room_id: roomId, auth, admin_password: adminPassword, listed: false, title: null });
      const outcome = await enterRoom({ roomId, key, name, adminPassword });
      if (!outcome.ok) {
        error.textContent = outcome.text;
        input.toggleAttribute('aria-invalid', outcome.code === 'invalid_name' || outcome.code === 'name_taken');
        return;
      }
      error.textContent = '';
      showQuickRoom(`${location.origin}/r/${encodeURIComponent(roomId)}#key=${encodeURIComponent(key)}`, adminPassword);
    } catch (err) {
      error.textContent = err.message;
    } finally {
      button.disabled = false;
    }
  });
}

/** The join form's field each refusal concerns; the others are told below the form. */
const FIELD_OF = { invalid_credentials: 'key', room_not_found: 'room', name_taken: 'name', invalid_name: 'name' };
const FIELDS = ['name', 'room', 'key'];

function showJoinError(field, text) {
  for (const f of FIELDS) {
    $(`join-${f}-error`).textContent = f === field ? text : '';
    $(`join-${f}`).toggleAttribute('aria-invalid', f === field);
  }
  $('join-error').textContent = field ? '' : text;
  if (field) $(`join-${field}`).focus();
}

/**
 * A refused join, told on the join form next to the field it concerns; what was typed stays
 * (a reload that could not rejoin fills in the room and the name it had).
 */
export function joinFailed(outcome, { roomId, name, admin }) {
  selectTab('join');
  if (roomId !== undefined) $('join-room').value = roomId;
  if (name !== undefined && !$('join-name').value) $('join-name').value = name;
  let { text } = outcome;
  if (outcome.code === 'invalid_credentials') {
    text = admin ? 'The room key or the admin password is wrong.' : 'The room key is wrong.';
  }
  showJoinError(FIELD_OF[outcome.code] || null, text);
}

function initJoin(enterRoom) {
  $('panel-join').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('join-name').value.trim();
    const roomId = $('join-room').value.trim();
    const key = $('join-key').value;
    if (!name) return showJoinError('name', 'Enter your name.');
    if (!ROOM_ID.test(roomId)) return showJoinError('room', 'Enter the room ID: 3 to 64 letters, digits, - or _.');
    if (key.length < 5) return showJoinError('key', 'Enter the room key (at least 5 characters).');
    const adminPassword = $('join-admin').value || undefined;
    const submit = $('panel-join').querySelector('button[type=submit]');
    showJoinError(null, '');
    $('join-error').textContent = 'Deriving keys and joining…';
    submit.disabled = true;
    try {
      const outcome = await enterRoom({ roomId, key, name, adminPassword });
      if (outcome.ok) $('join-error').textContent = '';
      else joinFailed(outcome, { admin: Boolean(adminPassword) });
    } finally {
      submit.disabled = false;
    }
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
  // Someone who followed a link came to join: the join form comes first.
  $('quick-form').hidden = true;
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
  initQuick(enterRoom);
  initCreate(enterRoom);
  initJoin(enterRoom);
  initDelete();
  prefillFromLink();
  loadLobby();
}
