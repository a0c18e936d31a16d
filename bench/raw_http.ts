/**
 * A minimal HTTP/1.1 client for the load generator: one request at a time
 * per TCP connection, connections kept alive per host and reused. It speaks
 * only what a benchmark needs from a well-behaved server (a status line,
 * headers, a body framed by Content-Length or chunked transfer coding) and
 * costs a fraction of `fetch`'s CPU per request, so on a shared machine the
 * load generator takes less of the cores the servers are measured on.
 *
 * @module
 */

/** A response: status and body text. */
export interface RawAnswer {
  status: number;
  body: string;
}

const CRLF2 = [13, 10, 13, 10];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Index of the first "\r\n\r\n" in bytes[from..to), or -1. */
function findHeaderEnd(bytes: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 3 < to; i++) {
    if (
      bytes[i] === CRLF2[0] && bytes[i + 1] === CRLF2[1] && bytes[i + 2] === CRLF2[2] &&
      bytes[i + 3] === CRLF2[3]
    ) return i;
  }
  return -1;
}

/** One keep-alive connection with its read buffer. */
class RawConnection {
  readonly conn: Deno.TcpConn;
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  closed = false;

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  /** Reads more bytes into the buffer; throws at end of stream. */
  async #fill(): Promise<void> {
    if (this.#start > 0 && this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buf.length) {
      const live = this.#end - this.#start;
      const next = new Uint8Array(
        live * 2 > this.#buf.length ? this.#buf.length * 2 : this.#buf.length,
      );
      next.set(this.#buf.subarray(this.#start, this.#end));
      this.#buf = next;
      this.#start = 0;
      this.#end = live;
    }
    const n = await this.conn.read(this.#buf.subarray(this.#end));
    if (n === null) throw new Error("the server closed the connection");
    this.#end += n;
  }

  /** The next line (without CRLF), reading as needed. */
  async #line(): Promise<string> {
    for (;;) {
      for (let i = this.#start; i + 1 < this.#end; i++) {
        if (this.#buf[i] === 13 && this.#buf[i + 1] === 10) {
          const line = decoder.decode(this.#buf.subarray(this.#start, i));
          this.#start = i + 2;
          return line;
        }
      }
      await this.#fill();
    }
  }

  /** Exactly n bytes of body, reading as needed. */
  async #bytes(n: number): Promise<Uint8Array> {
    while (this.#end - this.#start < n) await this.#fill();
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  /** Sends one request and reads its whole response. */
  async roundTrip(request: Uint8Array): Promise<{ answer: RawAnswer; keepAlive: boolean }> {
    let written = 0;
    while (written < request.length) written += await this.conn.write(request.subarray(written));
    // Status line and headers.
    let headerEnd: number;
    for (;;) {
      headerEnd = findHeaderEnd(this.#buf, this.#start, this.#end);
      if (headerEnd >= 0) break;
      await this.#fill();
    }
    const head = decoder.decode(this.#buf.subarray(this.#start, headerEnd));
    this.#start = headerEnd + 4;
    const lines = head.split("\r\n");
    const statusLine = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
    if (!statusLine) throw new Error(`not an HTTP/1.x response: ${JSON.stringify(lines[0])}`);
    const status = Number(statusLine[1]);
    let length: number | undefined;
    let chunked = false;
    let keepAlive = lines[0]!.startsWith("HTTP/1.1");
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const colon = line.indexOf(":");
      if (colon < 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim().toLowerCase();
      if (name === "content-length") length = Number(value);
      else if (name === "transfer-encoding") chunked = value.includes("chunked");
      else if (name === "connection") keepAlive = !value.includes("close");
    }
    let body = "";
    if (status === 204 || status === 304 || (status >= 100 && status < 200)) {
      body = "";
    } else if (chunked) {
      const parts: Uint8Array[] = [];
      for (;;) {
        const size = parseInt((await this.#line()).split(";")[0]!, 16);
        if (!Number.isFinite(size)) throw new Error("bad chunk size");
        if (size === 0) {
          while ((await this.#line()) !== "") { /* trailers */ }
          break;
        }
        parts.push(await this.#bytes(size));
        await this.#line();
      }
      body = parts.map((p) => decoder.decode(p, { stream: true })).join("") + decoder.decode();
    } else if (length !== undefined) {
      if (!Number.isSafeInteger(length) || length < 0) throw new Error("bad Content-Length");
      body = decoder.decode(await this.#bytes(length));
    } else {
      throw new Error("a response without Content-Length or chunked coding is not supported");
    }
    return { answer: { status, body }, keepAlive };
  }
}

/**
 * Returns a request function: `(method, url, body)` → status and body.
 * Connections to each host:port are reused; one in use is never shared.
 */
export function rawRequester(
  timeoutMs: number,
): (method: string, url: string, body: string | undefined) => Promise<RawAnswer> {
  const idle = new Map<string, RawConnection[]>();
  return async (method, url, body) => {
    const m = /^http:\/\/([^/:]+):(\d+)(\/.*)?$/.exec(url);
    if (!m) throw new Error(`Cannot request ${url}: only http://HOST:PORT/PATH is supported`);
    const [, hostname, port, path = "/"] = m;
    const hostKey = `${hostname}:${port}`;
    const payload = body === undefined ? undefined : encoder.encode(body);
    const head = `${method} ${path} HTTP/1.1\r\nhost: ${hostKey}\r\n` +
      (payload === undefined
        ? "\r\n"
        : `content-type: application/json\r\ncontent-length: ${payload.length}\r\n\r\n`);
    const headBytes = encoder.encode(head);
    let request = headBytes;
    if (payload !== undefined) {
      request = new Uint8Array(headBytes.length + payload.length);
      request.set(headBytes);
      request.set(payload, headBytes.length);
    }
    let conn = idle.get(hostKey)?.pop();
    if (conn === undefined) {
      const tcp = await Deno.connect({ hostname: hostname!, port: Number(port) });
      tcp.setNoDelay(true);
      conn = new RawConnection(tcp);
    }
    const c = conn;
    const timer = setTimeout(() => c.close(), timeoutMs);
    try {
      const { answer, keepAlive } = await c.roundTrip(request);
      if (keepAlive && !c.closed) {
        let list = idle.get(hostKey);
        if (list === undefined) idle.set(hostKey, list = []);
        list.push(c);
      } else {
        c.close();
      }
      return answer;
    } catch (error) {
      const timedOut = c.closed;
      c.close();
      if (timedOut) throw new Error(`Request timed out after ${timeoutMs} ms: ${url}`);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  };
}
