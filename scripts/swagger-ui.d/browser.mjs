// What the browser checks share: Chromium's flags for a headless run that can
// reach nothing but loopback, the loopback host names, and the route guard.

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

// Aborts every request of `context` to a host that is not loopback (data: and
// blob: URLs pass) and records its URL in `blocked`.
export async function holdToLoopback(context, blocked) {
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.protocol === 'data:' || u.protocol === 'blob:') return route.continue();
    if (!LOOPBACK.has(u.hostname)) {
      blocked.push(route.request().url());
      return route.abort('blockedbyclient');
    }
    return route.continue();
  });
}
