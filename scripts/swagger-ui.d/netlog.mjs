// Reads a Chromium NetLog (--log-net-log=FILE) and fails unless nothing the
// browser did reached beyond loopback:
//   - every TCP connection attempt went to 127.0.0.0/8 or ::1;
//   - no UDP datagram was sent to a non-loopback address (Chromium's IPv6
//     reachability probe connect()s a UDP socket to a public address without
//     sending anything: that is allowed and reported);
//   - every URL request to a non-loopback host ended in an error (with
//     --host-resolver-rules="MAP * ~NOTFOUND , EXCLUDE 127.0.0.1" the browser's
//     own background fetches die at name resolution).
//
//   node netlog.mjs <netlog.json> [label] [expected-address]
//
// With expected-address (e.g. 127.0.0.1:8080) it also fails unless the browser
// connected there: a log that saw no traffic at all proves nothing.
//
// Prints one summary line; exits 1 with the offending addresses otherwise.

import { readFileSync } from 'node:fs';

const [file, label = 'browser', expected] = process.argv.slice(2);
const text = readFileSync(file, 'utf8');
let log;
try {
  log = JSON.parse(text);
} catch {
  // A log whose writer was cut short is not valid JSON; Chromium writes the
  // constants on the first line and then one event per line: read those.
  const lines = text.split('\n');
  log = { constants: JSON.parse(lines[0].replace(/^\{"constants":/, '').replace(/,\s*$/, '')), events: [] };
  for (const line of lines.slice(1)) {
    if (!line.startsWith('{')) continue;
    try {
      log.events.push(JSON.parse(line.replace(/,\s*$/, '')));
    } catch {
      // the last, half-written line
    }
  }
}
const typeName = Object.fromEntries(Object.entries(log.constants.logEventTypes).map(([k, v]) => [v, k]));
const events = log.events || [];

const isLoopback = (addr) => {
  const host = String(addr).replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return /^127\./.test(host) || host === '::1';
};
const hostOf = (url) => {
  try {
    return new URL(url).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return '';
  }
};
const loopbackHost = (h) => h === 'localhost' || isLoopback(h);

const problems = [];
const tcpTargets = new Set();
const udpConnect = new Map(); // source id -> address
const udpSent = new Set(); // source ids that sent datagrams
const requests = new Map(); // source id -> {url, error}

for (const e of events) {
  const name = typeName[e.type] || String(e.type);
  const p = e.params || {};
  const src = e.source && e.source.id;
  if (name === 'TCP_CONNECT_ATTEMPT' || name === 'TCP_CONNECT_JOB_CONNECTOR_CONNECT_START') {
    if (p.address) tcpTargets.add(p.address);
  }
  if (name === 'TCP_CONNECT' && Array.isArray(p.address_list)) p.address_list.forEach((a) => tcpTargets.add(a));
  if (name === 'UDP_CONNECT' && p.address) udpConnect.set(src, p.address);
  if (name === 'UDP_BYTES_SENT') {
    udpSent.add(src);
    if (p.address && !isLoopback(p.address)) problems.push(`UDP datagram sent to ${p.address}`);
  }
  if ((name === 'REQUEST_ALIVE' || name === 'URL_REQUEST_START_JOB') && p.url) {
    const r = requests.get(src) || { url: p.url, error: undefined };
    requests.set(src, r);
  }
  if (name === 'REQUEST_ALIVE' && e.phase === 2 /* END */ && requests.has(src)) {
    requests.get(src).error = p.net_error;
  }
  if (name === 'URL_REQUEST_START_JOB' && p.net_error && requests.has(src)) requests.get(src).error = p.net_error;
}

if (expected && !tcpTargets.has(expected)) problems.push(`no TCP connection to ${expected} recorded: the log does not cover the check`);
for (const a of tcpTargets) if (!isLoopback(a)) problems.push(`TCP connection attempted to ${a}`);
const probes = [];
for (const [src, a] of udpConnect) {
  if (isLoopback(a)) continue;
  if (udpSent.has(src)) problems.push(`UDP datagrams sent to ${a}`);
  else probes.push(a);
}
const external = [...requests.values()].filter((r) => !loopbackHost(hostOf(r.url)));
for (const r of external) {
  if (!r.error) problems.push(`request to ${hostOf(r.url)} did not fail (${r.url.slice(0, 80)})`);
}

if (problems.length) {
  console.error(`FAIL (${label} netlog ${file}): network check failed:\n  ${[...new Set(problems)].join('\n  ')}`);
  process.exit(1);
}
const refused = [...new Set(external.map((r) => hostOf(r.url)))];
console.log(
  `  ok  ${label} netlog: ${events.length} events; TCP only to ${[...tcpTargets].join(', ') || '(none)'}` +
    (refused.length ? `; the browser's own background fetches (${refused.join(', ')}) all died at name resolution` : '') +
    (probes.length ? `; UDP reachability probe to ${[...new Set(probes)].join(', ')} sent no datagram` : ''),
);
