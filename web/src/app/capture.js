// Imported first by main.jsx, so that it runs before anything else: an invite link's key
// is taken out of the address bar and out of history at once. replaceState swaps the
// current entry, so no history entry ever keeps the fragment.

let pending = null;

/** Move the fragment, if any, into memory and clean the address bar. */
export function captureFragment() {
  const fragment = window.location.hash.slice(1);
  if (!fragment) return;
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  pending = fragmentText(fragment);
}

/** The fragment as text: percent-decoded where it is well-formed, else as it came. */
export function fragmentText(fragment) {
  try {
    return decodeURIComponent(fragment);
  } catch {
    return fragment;
  }
}

/** The captured invite key text, once; null when there is none. */
export function takeCapturedFragment() {
  const out = pending;
  pending = null;
  return out;
}

captureFragment();
