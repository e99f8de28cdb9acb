// Imported first by main.jsx, so that it runs before anything else: an invite link's key
// is taken out of the address bar and out of history at once. replaceState swaps the
// current entry, so no history entry ever keeps the fragment.

let pending = null;

/**
 * The invite link the page was opened with: the fragment as text, and the relay it names
 * (the page's own address, without a last /index.html), which the room is joined on.
 * @returns {{text: string, server: string} | null}
 */
export function inviteFromLocation() {
  const fragment = window.location.hash.slice(1);
  if (!fragment) return null;
  // Not ".../index.html", where the relay serves the app too: no WebSocket is there (nor
  // would its invite links open). As parseInvite (invite.js) and the Python client read a link.
  const path = window.location.pathname.replace(/\/index\.html$/, "/");
  return { text: fragmentText(fragment), server: window.location.origin + path };
}

/** Move the invite link's fragment, if any, into memory and clean the address bar. */
export function captureFragment() {
  const invite = inviteFromLocation();
  if (!invite) return;
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  pending = invite;
}

/** The fragment as text: percent-decoded where it is well-formed, else as it came. */
function fragmentText(fragment) {
  try {
    return decodeURIComponent(fragment);
  } catch {
    return fragment;
  }
}

/** The captured invite, once; null when there is none. */
export function takeCapturedInvite() {
  const out = pending;
  pending = null;
  return out;
}

captureFragment();
