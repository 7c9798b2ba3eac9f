// Key derivation and envelopes of docs/protocol.md, on WebCrypto only. The derived keys never
// leave the browser: the server gets the `auth` proof and opaque envelopes, nothing else (the
// tab keeps them in sessionStorage for a reload, see stay.js).

const utf8 = new TextEncoder();
const utf8Decode = new TextDecoder('utf-8', { fatal: true });
const subtle = globalThis.crypto.subtle;

export function b64uEncode(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let binary = '';
  for (let i = 0; i < view.length; i += 0x8000) {
    binary += String.fromCharCode(...view.subarray(i, i + 0x8000));
  }
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function b64uDecode(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]*$/.test(text)) {
    throw new Error('not base64url');
  }
  const padded = text.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((text.length + 3) % 4);
  const binary = atob(padded);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

export function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function hkdf(ikm, info) {
  const key = await subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  return new Uint8Array(
    await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: utf8.encode(info) }, key, 256),
  );
}

/** master, auth and enc for a room, as the contract derives them. */
export async function deriveRoomSecrets(roomId, roomKey) {
  const base = await subtle.importKey('raw', utf8.encode(roomKey), 'PBKDF2', false, ['deriveBits']);
  const master = new Uint8Array(
    await subtle.deriveBits(
      { name: 'PBKDF2', hash: 'SHA-256', salt: utf8.encode(`ephemera/v1/room/${roomId}`), iterations: 600000 },
      base,
      256,
    ),
  );
  const auth = await hkdf(master, 'ephemera/v1/auth');
  const enc = await hkdf(master, 'ephemera/v1/enc');
  return { master, auth: b64uEncode(auth), enc };
}

export async function aesKey(raw) {
  return subtle.importKey('raw', raw, 'AES-GCM', false, ['encrypt', 'decrypt']);
}

/** Seals a JSON value into `{"e2e":"v1","iv","ct"}` with a fresh IV; AAD is the room ID. */
export async function seal(key, roomId, value, iv = crypto.getRandomValues(new Uint8Array(12))) {
  const ct = await subtle.encrypt(
    { name: 'AES-GCM', iv, additionalData: utf8.encode(roomId) },
    key,
    utf8.encode(JSON.stringify(value)),
  );
  return { e2e: 'v1', iv: b64uEncode(iv), ct: b64uEncode(ct) };
}

/** Opens an envelope; throws when it is not one or does not authenticate. */
export async function open(key, roomId, body) {
  if (!body || body.e2e !== 'v1' || typeof body.iv !== 'string' || typeof body.ct !== 'string') {
    throw new Error('not an envelope');
  }
  const plain = await subtle.decrypt(
    { name: 'AES-GCM', iv: b64uDecode(body.iv), additionalData: utf8.encode(roomId) },
    key,
    b64uDecode(body.ct),
  );
  return JSON.parse(utf8Decode.decode(plain));
}

/**
 * A fresh ECDH P-256 key pair; the public half as the raw 65-byte point in base64url, and the
 * private half as a JWK too, for the tab to keep across a reload (stay.js).
 */
export async function dmKeyPair() {
  const pair = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
  const raw = await subtle.exportKey('raw', pair.publicKey);
  const jwk = await subtle.exportKey('jwk', pair.privateKey);
  return { privateKey: pair.privateKey, pubkey: b64uEncode(raw), jwk };
}

/** The DM key pair this tab kept: the private key from its JWK, the public half as given. */
export async function restoreDmKeyPair(jwk, pubkey) {
  const privateKey = await subtle.importKey('jwk', jwk, { name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
  return { privateKey, pubkey, jwk };
}

/** Compares by Unicode code point, as the contract sorts names (not by UTF-16 unit). */
export function byCodePoint(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/** The raw per-pair DM key for two members of a room. */
export async function dmKeyRaw(privateKey, theirPubkey, roomId, nameA, nameB) {
  const theirs = await subtle.importKey('raw', b64uDecode(theirPubkey), { name: 'ECDH', namedCurve: 'P-256' }, false, []);
  const secret = new Uint8Array(await subtle.deriveBits({ name: 'ECDH', public: theirs }, privateKey, 256));
  const names = [nameA, nameB].sort(byCodePoint).join('/');
  return { secret, key: await hkdf(secret, `ephemera/v1/dm/${roomId}/${names}`) };
}

/** A short fingerprint people can read to each other: 6 bytes of SHA-256, in groups. */
export async function fingerprint(label, raw) {
  const digest = new Uint8Array(await subtle.digest('SHA-256', new Uint8Array([...utf8.encode(label), ...raw])));
  return hex(digest.subarray(0, 6)).match(/.{4}/g).join(' ');
}

/**
 * The safety code two members read to each other (docs/protocol.md, "Verifying a member"):
 * SHA-256 over the room and both `[name, pubkey]` pairs in order of name, as six groups of five
 * digits. Either member gets the same code from what it was given.
 */
export async function safetyCode(roomId, a, b) {
  const [first, second] = [a, b].sort((x, y) => byCodePoint(x[0], y[0]));
  const parts = [utf8.encode(`ephemera/v1/safety/${roomId}`), new Uint8Array([0])];
  for (const [name, pubkey] of [first, second]) {
    const bytes = utf8.encode(name);
    const raw = b64uDecode(pubkey);
    parts.push(new Uint8Array([bytes.length]), bytes, new Uint8Array([raw.length]), raw);
  }
  const input = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => { input.set(p, at); return at + p.length; }, 0);
  const digest = new Uint8Array(await subtle.digest('SHA-256', input));
  const groups = [];
  for (let i = 0; i < 30; i += 5) {
    const n = digest.subarray(i, i + 5).reduce((acc, byte) => acc * 256 + byte, 0);
    groups.push(String(n % 100000).padStart(5, '0'));
  }
  return groups.join(' ');
}

/**
 * A random room ID that starts with a letter or a digit: one starting with `-` would read as an
 * option to ephemera-cli and to most command lines it is pasted into.
 */
export function randomRoomId(length = 16) {
  for (;;) {
    const id = randomKey(length);
    if (/^[A-Za-z0-9]/.test(id)) return id;
  }
}

/** A random key of `length` characters from the base64url alphabet. */
export function randomKey(length = 22) {
  return b64uEncode(crypto.getRandomValues(new Uint8Array(Math.ceil((length * 3) / 4)))).slice(0, length);
}
