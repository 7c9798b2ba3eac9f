// What the web client needs of the wire contract (docs/protocol.md). The server's table of
// error and close codes is crates/protocol/src/codes.rs; this module repeats none of its
// numbers: a close is final by the same rule as `close::is_final`, a refusal is named by its
// error code (the close's reason and the `error` frame's `code`), and the words shown are the
// server's own `message` unless a code below has words of the web client's.

export const ROOM_ID = /^[A-Za-z0-9_-]{3,64}$/;

/** Raw bytes of one file chunk, as the contract sizes them. */
export const FILE_CHUNK = 128 * 1024;

/** Whether a close ends the visit (the 4xxx codes and 1000); others call for a reconnect. */
export function isFinal(code) {
  return code === 1000 || (code >= 4000 && code < 5000);
}

/** The web client's words for refusals that end a visit, by error code. */
const WORDS = {
  bad_request: 'The server did not understand this client.',
  invalid_credentials: 'Wrong room key or admin password.',
  room_not_found: 'This room does not exist (or was deleted).',
  name_taken: 'That name is already in the room; pick another.',
  session_replaced: 'You are connected from another window.',
  frame_too_large: 'A message was too large.',
  invalid_name: 'That name cannot be used.',
  invalid_pubkey: 'This browser\'s DM key was refused.',
  rate_limited: 'Too many failed attempts; wait a minute.',
  room_full: 'The room is full.',
  room_locked: 'The room is locked: nobody new can join until an admin unlocks it.',
};

/**
 * What to tell a person whose socket closed for good: the words for the close's error code,
 * else the server's message from the `error` frame that named it, else the close code.
 */
export function refusalText(code, reason, lastError) {
  if (WORDS[reason]) return WORDS[reason];
  if (lastError && lastError.code === reason) return lastError.message;
  return `The server closed the connection (${code}${reason ? `, ${reason}` : ''}).`;
}
