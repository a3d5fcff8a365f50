// What the browser checks share: Chromium's flags for a headless run that can
// reach nothing but loopback, and the loopback host names.

export const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

export const CHROMIUM_ARGS = [
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Every name but 127.0.0.1 unresolvable: an external fetch cannot succeed.
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
];
