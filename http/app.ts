/**
 * The HTTP API: a thin Hono app that turns requests into calls on a
 * {@linkcode KvService} and errors into status codes with a JSON body
 * `{"error": "..."}`, in one `onError`.
 *
 * | request | answer |
 * | --- | --- |
 * | `PUT /` or `POST /` with `{"Key":"k","Value":"v"}` | 204 once committed and applied |
 * | `GET /{key}` | 200 `text/plain`, the value and `\n`; 404 if absent |
 * | `DELETE /{key}` | 204 once committed and applied; 404 if the key was absent |
 * | `GET /mgmt/nodes` | 200, JSON array of {@linkcode Member} |
 * | `DELETE /mgmt/nodes/{id}` | 204 once the removal is committed; 404 if no such member |
 * | `GET /mgmt/status` | 200, JSON: the service's status |
 * | `GET /mgmt/health` | 200 `{"status":"ok"}` while the process serves |
 *
 * Keys in URLs: the path after the first `/`, percent-decoded as a whole with
 * `decodeURIComponent`, so `GET /a/b` and `GET /a%2Fb` both read key `a/b`.
 * A client that sends `encodeURIComponent(key)` round-trips every key except
 * `.` and `..` (URL parsers remove those path segments). The exact management
 * paths above take precedence; a key such as `mgmt/nodes` is reached as
 * `/mgmt%2Fnodes`.
 *
 * Errors: 400 bad JSON, missing or ill-typed fields, empty or too-long keys,
 * bad percent-encoding; 408 body not received before the deadline; 413 body
 * over `bodyBytesMax` or value over `valueBytesMax`; 404 unknown key, member
 * or route; 503 with `Retry-After` when the cluster cannot answer in time
 * (`UnavailableError` and its subclasses, or the request's deadline passing:
 * a write's outcome is then unknown and is never reported as success); 500
 * anything else, with a log line.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { UnavailableError, UnknownMemberError } from "../raft/errors.ts";

/** One cluster member as `GET /mgmt/nodes` lists it. */
export interface Member {
  id: number;
  /** Raft (peer) address. */
  addr: string;
  /** HTTP API address. */
  api: string;
  type: "voter" | "learner";
  /** True on the leader. */
  leader: boolean;
}

/**
 * What the HTTP API needs from the node. Every call gets an `AbortSignal`
 * that aborts at the request's deadline (or when the client goes away).
 */
export interface KvService {
  /** Resolves once the write is committed and applied. */
  put(key: string, value: string, signal: AbortSignal): Promise<void>;
  /** Resolves once committed and applied: true if the key existed. */
  delete(key: string, signal: AbortSignal): Promise<boolean>;
  /** A linearizable read. */
  get(key: string, signal: AbortSignal): Promise<string | undefined>;
  members(signal: AbortSignal): Promise<Member[]>;
  /** Resolves once the removal is committed; throws `UnknownMemberError`. */
  removeMember(id: number, signal: AbortSignal): Promise<void>;
  /** For `GET /mgmt/status`: id, role, term, commit, applied, leader... (JSON-serialisable). */
  status(): unknown;
}

/** A structured log function: a constant message plus fields. */
export type LogFunction = (message: string, fields: Record<string, unknown>) => void;

/** Options of {@linkcode createApp}. */
export interface AppOptions {
  service: KvService;
  /** Largest request body read; more is 413, detected while reading. Default 1 MiB. */
  bodyBytesMax?: number;
  /** Largest key, in UTF-8 bytes; more is 400. Default 4 KiB. */
  keyBytesMax?: number;
  /** Largest value, in UTF-8 bytes; more is 413. Default 1 MiB (the body limit binds first). */
  valueBytesMax?: number;
  /** Each request's deadline, passed to the service as an `AbortSignal`. Default 5000 ms. */
  requestTimeoutMs?: number;
  /** Where unexpected errors (500) are logged. Default: `console.error`. */
  logError?: LogFunction;
}

/** Default of {@linkcode AppOptions.bodyBytesMax}: 1 MiB. */
export const BODY_BYTES_MAX_DEFAULT = 1024 * 1024;
/** Default of {@linkcode AppOptions.keyBytesMax}: 4 KiB. */
export const KEY_BYTES_MAX_DEFAULT = 4096;
/** Default of {@linkcode AppOptions.valueBytesMax}: 1 MiB. */
export const VALUE_BYTES_MAX_DEFAULT = 1024 * 1024;
/** Default of {@linkcode AppOptions.requestTimeoutMs}. */
export const REQUEST_TIMEOUT_MS_DEFAULT = 5000;

const utf8 = new TextEncoder();

/**
 * The HTTP API over `service`.
 *
 * @example
 * ```ts
 * const app = createApp({ service });
 * Deno.serve({ port: 9090 }, app.fetch);
 * ```
 */
export function createApp(options: AppOptions): Hono {
  const { service } = options;
  const bodyBytesMax = positive("bodyBytesMax", options.bodyBytesMax ?? BODY_BYTES_MAX_DEFAULT);
  const keyBytesMax = positive("keyBytesMax", options.keyBytesMax ?? KEY_BYTES_MAX_DEFAULT);
  const valueBytesMax = positive(
    "valueBytesMax",
    options.valueBytesMax ?? VALUE_BYTES_MAX_DEFAULT,
  );
  const requestTimeoutMs = positive(
    "requestTimeoutMs",
    options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT,
  );
  const logError = options.logError ?? defaultLogError;
  const deadlines = new Deadlines(requestTimeoutMs);
  const withDeadline = <T>(_c: Context, fn: (signal: AbortSignal) => Promise<T>) =>
    deadlines.run(fn);

  const app = new Hono();
  // Hono's onError sees only Error instances; wrap anything else thrown.
  app.use(async (_c, next) => {
    try {
      await next();
    } catch (error) {
      throw error instanceof Error ? error : new Error(`Non-error thrown: ${String(error)}`);
    }
  });

  const putHandler = (c: Context) =>
    withDeadline(c, async (signal) => {
      const body = await readBodyText(c.req.raw, bodyBytesMax, signal, requestTimeoutMs);
      const { key, value } = parsePutBody(body);
      checkKey(key, keyBytesMax);
      const valueBytes = utf8BytesOver(value, valueBytesMax);
      if (valueBytes > 0) {
        throw new HTTPException(413, {
          message: `Cannot put: the value is ${valueBytes} bytes, more than ${valueBytesMax}`,
        });
      }
      await service.put(key, value, signal);
      return c.body(null, 204);
    });
  app.put("/", putHandler);
  app.post("/", putHandler);

  app.get(
    "/mgmt/nodes",
    (c) => withDeadline(c, async (signal) => c.json(await service.members(signal))),
  );
  app.delete("/mgmt/nodes/:id", (c) =>
    withDeadline(c, async (signal) => {
      const raw = c.req.param("id");
      const id = /^[1-9][0-9]*$/.test(raw) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(id)) {
        throw new HTTPException(400, {
          message: `Cannot remove member: the id must be a positive integer, got ${
            JSON.stringify(raw)
          }`,
        });
      }
      await service.removeMember(id, signal);
      return c.body(null, 204);
    }));
  app.get("/mgmt/status", (c) => c.json(service.status() as object));
  app.get("/mgmt/health", (c) => c.json({ status: "ok" }));

  // [\s\S], not ".": a key may hold line breaks (%0A, %0D, %E2%80%A8), which "." does not match.
  app.get("/:key{[\\s\\S]+}", (c) =>
    withDeadline(c, async (signal) => {
      const key = keyFromUrl(c.req.url, keyBytesMax);
      const value = await service.get(key, signal);
      if (value === undefined) throw new HTTPException(404, { message: `Key not found: ${key}` });
      return c.text(`${value}\n`, 200);
    }));
  app.delete("/:key{[\\s\\S]+}", (c) =>
    withDeadline(c, async (signal) => {
      const key = keyFromUrl(c.req.url, keyBytesMax);
      const existed = await service.delete(key, signal);
      if (!existed) throw new HTTPException(404, { message: `Key not found: ${key}` });
      return c.body(null, 204);
    }));

  app.notFound((c) =>
    c.json({ error: `No such route: ${c.req.method} ${new URL(c.req.url).pathname}` }, 404)
  );

  app.onError((error, c) => {
    if (error instanceof HTTPException) {
      return c.json({ error: error.message }, error.status as ContentfulStatusCode);
    }
    if (error instanceof UnknownMemberError) return c.json({ error: error.message }, 404);
    if (error instanceof UnavailableError) {
      c.header("Retry-After", String(Math.max(0, Math.ceil(error.retryAfterSeconds))));
      return c.json({ error: error.message }, 503);
    }
    if (error instanceof DOMException && error.name === "TimeoutError") {
      c.header("Retry-After", "1");
      return c.json(
        { error: `Cannot answer within ${requestTimeoutMs} ms: ${error.message}` },
        503,
      );
    }
    if (error instanceof DOMException && error.name === "AbortError") {
      // The client went away; nobody reads this answer.
      c.header("Retry-After", "1");
      return c.json({ error: "The request was aborted" }, 503);
    }
    logError("request failed", {
      method: c.req.method,
      path: new URL(c.req.url).pathname,
      error: error instanceof Error ? error.stack ?? error.message : String(error),
    });
    return c.json({ error: "Internal server error" }, 500);
  });

  return app;
}

function defaultLogError(message: string, fields: Record<string, unknown>): void {
  console.error(message, fields);
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`Cannot create the app: ${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/**
 * Request deadlines: `run(fn)` gives `fn` a signal that aborts (reason: a
 * `TimeoutError`) once `timeoutMs` has passed. One sweeping interval serves
 * every request in flight, and runs only while there are some: a timer per
 * request costs more than the rest of a write's handling in JavaScript.
 * Deadlines fire up to a quarter of `timeoutMs` (at most 100 ms) late. The
 * request's own signal is not used: under `Deno.serve` it also aborts after
 * a successful response (and touching it prints a warning).
 */
class Deadlines {
  readonly #timeoutMs: number;
  readonly #sweepMs: number;
  readonly #pending = new Set<{ at: number; controller: AbortController }>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
    this.#sweepMs = Math.max(1, Math.min(100, Math.floor(timeoutMs / 4)));
  }

  async run<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const entry = { at: Date.now() + this.#timeoutMs, controller: new AbortController() };
    this.#pending.add(entry);
    this.#timer ??= setInterval(() => this.#sweep(), this.#sweepMs);
    try {
      return await fn(entry.controller.signal);
    } finally {
      this.#pending.delete(entry);
      if (this.#pending.size === 0) this.#stop();
    }
  }

  #sweep(): void {
    const now = Date.now();
    // One timeout for all: the set's insertion order is deadline order.
    for (const entry of this.#pending) {
      if (entry.at > now) break;
      this.#pending.delete(entry);
      entry.controller.abort(
        new DOMException(`the request's deadline of ${this.#timeoutMs} ms passed`, "TimeoutError"),
      );
    }
    if (this.#pending.size === 0) this.#stop();
  }

  #stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Reads the body as UTF-8 text, never holding more than `bytesMax` bytes:
 * a declared `Content-Length` over the limit is refused before reading, and
 * the count is checked again on every chunk (the header may be absent).
 */
async function readBodyText(
  request: Request,
  bytesMax: number,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<string> {
  const tooLarge = () =>
    new HTTPException(413, {
      message: `Cannot read the body: it is larger than ${bytesMax} bytes`,
    });
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > bytesMax) throw tooLarge();
  if (request.body === null) return "";
  if (declared !== null) {
    // The server delivers no more than the declared length: take it whole,
    // which skips the stream machinery on the common path.
    return decodeUtf8Body(
      new Uint8Array(
        await untilAborted(request.arrayBuffer(), signal, () =>
          new HTTPException(408, {
            message: `Cannot read the body: not received within ${timeoutMs} ms`,
          })),
      ),
    );
  }
  const reader = request.body.getReader();
  const onAbort = () => void reader.cancel().catch(() => {});
  signal.addEventListener("abort", onAbort, { once: true });
  const chunks: Uint8Array[] = [];
  let length = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (signal.aborted) {
        throw new HTTPException(408, {
          message: `Cannot read the body: not received within ${timeoutMs} ms`,
        });
      }
      if (done) break;
      length += value.length;
      if (length > bytesMax) {
        await reader.cancel().catch(() => {});
        throw tooLarge();
      }
      chunks.push(value);
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return decodeUtf8Body(bytes);
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function decodeUtf8Body(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new HTTPException(400, { message: "Cannot read the body: it is not valid UTF-8" });
  }
}

/** `promise`, or a rejection with `error()` once `signal` aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal, error: () => Error): Promise<T> {
  if (signal.aborted) return Promise.reject(error());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(error());
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** `{"Key": string, "Value": string}`; extra fields are ignored. */
function parsePutBody(text: string): { key: string; value: string } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (error) {
    throw new HTTPException(400, {
      message: `Cannot put: the body is not JSON: ${
        error instanceof Error ? error.message : String(error)
      }`,
    });
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HTTPException(400, {
      message: 'Cannot put: the body must be a JSON object {"Key": "...", "Value": "..."}',
    });
  }
  const { Key: key, Value: value } = body as Record<string, unknown>;
  for (const [name, field] of [["Key", key], ["Value", value]] as const) {
    if (field === undefined) {
      throw new HTTPException(400, { message: `Cannot put: the field ${name} is missing` });
    }
    if (typeof field !== "string") {
      throw new HTTPException(400, {
        message: `Cannot put: the field ${name} must be a string, got ${
          field === null ? "null" : Array.isArray(field) ? "array" : typeof field
        }`,
      });
    }
    if (!field.isWellFormed()) {
      // JSON allows "\ud800", but it is not text: UTF-8 cannot carry it.
      throw new HTTPException(400, {
        message: `Cannot put: the field ${name} is not valid Unicode (it has a lone surrogate)`,
      });
    }
  }
  return { key: key as string, value: value as string };
}

/**
 * The UTF-8 length of `s` if it is more than `max`, else 0. Counted only
 * when it may be: a UTF-16 code unit takes at most 3 bytes in UTF-8.
 */
function utf8BytesOver(s: string, max: number): number {
  if (s.length * 3 <= max) return 0;
  const bytes = utf8.encode(s).length;
  return bytes > max ? bytes : 0;
}

function checkKey(key: string, keyBytesMax: number): void {
  if (key === "") throw new HTTPException(400, { message: "Cannot use the key: it is empty" });
  if (key === "." || key === "..") {
    // Every URL parser removes such a path segment (%2E too): it could be
    // written but never read or deleted.
    throw new HTTPException(400, {
      message: `Cannot use the key ${JSON.stringify(key)}: no URL can name it`,
    });
  }
  const bytes = utf8BytesOver(key, keyBytesMax);
  if (bytes > 0) {
    throw new HTTPException(400, {
      message: `Cannot use the key: it is ${bytes} bytes, more than ${keyBytesMax}`,
    });
  }
}

/** The key named by a URL's path: everything after the first `/`, percent-decoded. */
function keyFromUrl(url: string, keyBytesMax: number): string {
  const raw = new URL(url).pathname.slice(1);
  let key: string;
  try {
    key = decodeURIComponent(raw);
  } catch {
    throw new HTTPException(400, {
      message: `Cannot use the key: bad percent-encoding in ${JSON.stringify(raw)}`,
    });
  }
  checkKey(key, keyBytesMax);
  return key;
}
