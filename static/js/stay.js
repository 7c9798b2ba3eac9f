// What this tab keeps so that a reload (or a closed tab the browser restores) brings the
// person back into the room as they were, quietly, with the `session` token. It lives in
// sessionStorage: per tab, gone when the tab is closed for good, and cleared on Leave and when
// the room ends. It holds the room ID, the name, the derived `auth` proof and `enc` key, the
// DM private key, the latest `session` token and, for an admin, the admin password (admin
// status needs it again on every join). It never holds the room key itself, but what it holds
// is enough to read the room and act in it as this member until the room ends: browsers may
// write sessionStorage to disk for session restore, and "Duplicate tab" copies it (the copy
// takes the member's place; the original tab ends with "connected from another window").

const KEY = 'ephemera.room';

export function save(state) {
  try { sessionStorage.setItem(KEY, JSON.stringify(state)); } catch { /* storage off: no rejoin on reload */ }
}

/** The saved room, if this tab has one for `roomId` (any room when `roomId` is omitted). */
export function load(roomId) {
  try {
    const state = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    if (state && (roomId === undefined || state.roomId === roomId)) return state;
  } catch { /* unreadable: as if nothing was saved */ }
  return null;
}

export function clear() {
  try { sessionStorage.removeItem(KEY); } catch { /* nothing to clear */ }
}
