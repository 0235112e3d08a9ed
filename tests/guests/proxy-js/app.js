// A standard wasi:http/proxy@0.2.0 component for componentize-js, written as its users
// write one: it exports `incomingHandler` over the raw WASI 0.2 bindings (no fetch
// event), with blocking calls; nothing here knows trio_isyswasfa. The routes are those
// of tests/guests/proxy-py-std/app.py and tests/guests/proxy-rust (the same answers but
// for the x-guest header and the wording of error codes), so the differential harness
// trio_isyswasfa.testing.http_differential checks all three alike. Built against the
// world of tests/guests/proxy-py-std/wit by trio_isyswasfa.testing.build_js_component.

import {
  Fields,
  IncomingBody,
  OutgoingBody,
  OutgoingRequest,
  OutgoingResponse,
  ResponseOutparam,
} from 'wasi:http/types@0.2.0';
import { handle as sendUpstream } from 'wasi:http/outgoing-handler@0.2.0';
import { subscribeDuration } from 'wasi:clocks/monotonic-clock@0.2.0';

const GUEST = 'js';
const PIECE = 4096; // what one blocking-write-and-flush may carry
const READ = 65536n;
const PATTERN = 'abcdefghijklmnopqrstuvwxyz0123456789\n';
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text) => encoder.encode(text);
const TEXT = () => [
  ['content-type', bytes('text/plain; charset=utf-8')],
  ['x-guest', bytes(GUEST)],
];

function writeAll(stream, data) {
  for (let at = 0; at < data.length; at += PIECE) {
    stream.blockingWriteAndFlush(data.subarray(at, at + PIECE));
  }
}

/** Every byte of an input stream, piece by piece, to `sink`; ends when it is closed. */
function drain(source, sink) {
  for (;;) {
    let chunk;
    try {
      chunk = source.blockingRead(READ);
    } catch (err) {
      if (err.payload && err.payload.tag === 'closed') return;
      throw err;
    }
    sink(chunk);
  }
}

function respond(out, status, headers, body, trailers) {
  const response = new OutgoingResponse(Fields.fromList(headers));
  response.setStatusCode(status);
  const outBody = response.body();
  ResponseOutparam.set(out, { tag: 'ok', val: response });
  const stream = outBody.write();
  writeAll(stream, body);
  stream[Symbol.dispose]();
  OutgoingBody.finish(outBody, trailers);
}

function waitTrailers(body) {
  const future = IncomingBody.finish(body);
  future.subscribe().block();
  const outcome = future.get(); // option<result<result<option<trailers>, error-code>>>
  if (outcome && outcome.tag === 'ok' && outcome.val.tag === 'ok') return outcome.val.val;
  return undefined;
}

function query(target, name, fallback) {
  const at = target.indexOf('?');
  const found = new URLSearchParams(at < 0 ? '' : target.slice(at + 1)).get(name);
  return found === null ? fallback : Number(found);
}

function methodName(method) {
  return method.tag === 'other' ? method.val : method.tag.toUpperCase();
}

function echo(request, out) {
  const scheme = request.scheme();
  const lines = [
    `method: ${methodName(request.method())}`,
    `path-with-query: ${request.pathWithQuery() ?? 'None'}`,
    `scheme: ${scheme === undefined ? 'none' : scheme.tag === 'other' ? scheme.val : scheme.tag.toLowerCase()}`,
    `authority: ${request.authority() ?? 'None'}`,
  ];
  const headers = TEXT();
  // by name (distinct names come in each host's own order); a stable sort keeps repeats
  const entries = request.headers().entries();
  entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (const [name, value] of entries) {
    lines.push(`header: ${name}: ${decoder.decode(value)}`);
    if (name.startsWith('x-')) headers.push([name, value]);
  }
  respond(out, 200, headers, bytes(lines.join('\n') + '\n'));
}

function echoBody(request, out) {
  const fields = request.headers();
  const kind = fields.get('content-type')[0] ?? bytes('application/octet-stream');
  const headers = [['content-type', kind], ['x-guest', bytes(GUEST)]];
  for (const value of fields.get('trailer')) headers.push(['trailer', value]); // HTTP/1.1 sends only those declared
  const inBody = request.consume();
  const response = new OutgoingResponse(Fields.fromList(headers));
  const outBody = response.body();
  ResponseOutparam.set(out, { tag: 'ok', val: response });
  const source = inBody.stream();
  const sink = outBody.write();
  drain(source, (chunk) => writeAll(sink, chunk));
  source[Symbol.dispose]();
  sink[Symbol.dispose]();
  OutgoingBody.finish(outBody, waitTrailers(inBody));
}

function manyBytes(target, out) {
  const n = query(target, 'n', 1 << 20);
  const response = new OutgoingResponse(
    Fields.fromList([['content-type', bytes('application/octet-stream')], ['x-guest', bytes(GUEST)]]),
  );
  const outBody = response.body();
  ResponseOutparam.set(out, { tag: 'ok', val: response });
  const block = bytes(PATTERN.repeat(Math.floor(Number(READ) / PATTERN.length))); // whole patterns
  const stream = outBody.write();
  for (let sent = 0; sent < n; ) {
    const piece = block.subarray(0, Math.min(block.length, n - sent));
    writeAll(stream, piece);
    sent += piece.length;
  }
  stream[Symbol.dispose]();
  OutgoingBody.finish(outBody, undefined);
}

function outgoing(request, out) {
  const target = request.headers().get('x-upstream-url')[0];
  if (target === undefined) return respond(out, 400, TEXT(), bytes('missing x-upstream-url\n'));
  const url = new URL(decoder.decode(target));
  const upstream = new OutgoingRequest(Fields.fromList([['x-from-guest', bytes(GUEST)]]));
  upstream.setMethod({ tag: 'get' });
  upstream.setScheme(url.protocol === 'https:' ? { tag: 'HTTPS' } : { tag: 'HTTP' });
  upstream.setAuthority(url.host);
  upstream.setPathWithQuery(url.pathname + url.search);
  let answer;
  try {
    const future = sendUpstream(upstream, undefined);
    future.subscribe().block();
    const outcome = future.get(); // option<result<result<incoming-response, error-code>>>
    if (outcome.val.tag === 'err') throw { payload: outcome.val.val };
    answer = outcome.val.val;
  } catch (err) {
    const code = err.payload ? JSON.stringify(err.payload) : String(err);
    return respond(out, 502, TEXT(), bytes(`upstream error: ${code}\n`));
  }
  const status = answer.status();
  const kind = answer.headers().get('content-type')[0] ?? bytes('application/octet-stream');
  const inBody = answer.consume();
  const parts = [];
  const source = inBody.stream();
  drain(source, (chunk) => parts.push(chunk));
  source[Symbol.dispose]();
  waitTrailers(inBody);
  const body = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (body.set(p, at), at + p.length), 0);
  const headers = [
    ['content-type', kind],
    ['x-guest', bytes(GUEST)],
    ['x-upstream-status', bytes(String(status))],
  ];
  respond(out, status, headers, body);
}

/** `hello, world\n` (13 bytes) under a content-length of `declared`, going on whatever
 * the host says about the mismatch (it must cut or fail the response). */
function declaredLength(out, declared) {
  const response = new OutgoingResponse(
    Fields.fromList([...TEXT(), ['content-length', bytes(String(declared))]]),
  );
  const outBody = response.body();
  ResponseOutparam.set(out, { tag: 'ok', val: response });
  const stream = outBody.write();
  try {
    stream.blockingWriteAndFlush(bytes('hello, world\n'));
  } catch {}
  stream[Symbol.dispose]();
  try {
    OutgoingBody.finish(outBody, undefined);
  } catch {}
}

export const incomingHandler = {
  handle(request, out) {
    const target = request.pathWithQuery() ?? '/';
    const path = target.split('?')[0];
    if (path === '/' || path === '/hello') {
      const body = bytes('hello, world\n');
      respond(out, 200, [...TEXT(), ['content-length', bytes(String(body.length))]], body);
    } else if (path === '/echo') {
      echo(request, out);
    } else if (path === '/echo-body') {
      echoBody(request, out);
    } else if (path === '/bytes') {
      manyBytes(target, out);
    } else if (path === '/trailers') {
      const body = bytes('trailers follow\n');
      const trailers = Fields.fromList([
        ['x-trailer-one', bytes('1')],
        ['x-body-length', bytes(String(body.length))],
      ]);
      respond(out, 200, [...TEXT(), ['trailer', bytes('x-trailer-one, x-body-length')]], body, trailers);
    } else if (path === '/outgoing') {
      outgoing(request, out);
    } else if (path === '/sleep') {
      const ms = query(target, 'ms', 100);
      subscribeDuration(BigInt(ms) * 1_000_000n).block();
      respond(out, 200, TEXT(), bytes(`slept ${ms} ms\n`));
    } else if (path === '/no-response') {
      // bad answers, for the host to handle as the spec says: never set the response;
      // write past a declared content-length; finish short of it
    } else if (path === '/overflow') {
      declaredLength(out, 5);
    } else if (path === '/underflow') {
      declaredLength(out, 100);
    } else {
      respond(out, 404, TEXT(), bytes('not found\n'));
    }
  },
};
