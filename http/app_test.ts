import { assert, assertEquals, assertStringIncludes, assertThrows } from "../tests/assert.ts";
import {
  NotLeaderError,
  OutcomeUnknownError,
  StoppedError,
  UnavailableError,
  UnknownMemberError,
} from "../raft/errors.ts";
import { type AppOptions, createApp, type KvService, type Member } from "./app.ts";

interface Call {
  method: string;
  args: unknown[];
  signal: AbortSignal;
}

const MEMBERS: Member[] = [
  { id: 1, addr: "127.0.0.1:8080", api: "127.0.0.1:9090", type: "voter", leader: true },
  { id: 2, addr: "127.0.0.1:8081", api: "127.0.0.1:9091", type: "learner", leader: false },
];

/** A service backed by a Map that records its calls; `fail` makes every call throw. */
class FakeService implements KvService {
  data = new Map<string, string>();
  calls: Call[] = [];
  fail: unknown = undefined;

  #call(method: string, signal: AbortSignal, ...args: unknown[]): void {
    this.calls.push({ method, args, signal });
    if (this.fail !== undefined) throw this.fail;
  }
  put(key: string, value: string, signal: AbortSignal): Promise<void> {
    this.#call("put", signal, key, value);
    this.data.set(key, value);
    return Promise.resolve();
  }
  delete(key: string, signal: AbortSignal): Promise<boolean> {
    this.#call("delete", signal, key);
    return Promise.resolve(this.data.delete(key));
  }
  get(key: string, signal: AbortSignal): Promise<string | undefined> {
    this.#call("get", signal, key);
    return Promise.resolve(this.data.get(key));
  }
  members(signal: AbortSignal): Promise<Member[]> {
    this.#call("members", signal);
    return Promise.resolve(MEMBERS);
  }
  removeMember(id: number, signal: AbortSignal): Promise<void> {
    this.#call("removeMember", signal, id);
    if (!MEMBERS.some((m) => m.id === id)) {
      return Promise.reject(new UnknownMemberError(`Cannot remove member ${id}: no such member`));
    }
    return Promise.resolve();
  }
  status(): unknown {
    if (this.fail !== undefined) throw this.fail;
    return { id: 1, role: "leader", term: 3, commit: 10, applied: 10, leader: 1 };
  }
}

function setup(options: Partial<AppOptions> = {}) {
  const service = new FakeService();
  const logs: [string, Record<string, unknown>][] = [];
  const app = createApp({
    service,
    logError: (message, fields) => logs.push([message, fields]),
    ...options,
  });
  return { app, service, logs };
}

function putRequest(body: BodyInit, init: RequestInit = {}): RequestInit {
  return { method: "PUT", body, ...init };
}

/** Asserts a JSON error answer and returns its message. */
async function expectError(response: Response, status: number): Promise<string> {
  assertEquals(response.status, status);
  assertStringIncludes(response.headers.get("content-type") ?? "", "application/json");
  const body = await response.json();
  assertEquals(Object.keys(body), ["error"]);
  assertEquals(typeof body.error, "string");
  assert(body.error.length > 0);
  return body.error;
}

/** A body stream of `total` bytes in 64 KiB chunks, counting what was pulled. */
function bigStream(total: number): { stream: ReadableStream<Uint8Array>; pulled: () => number } {
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(65536, total - sent);
      sent += n;
      controller.enqueue(new Uint8Array(n).fill(0x20));
    },
  });
  return { stream, pulled: () => sent };
}

Deno.test("PUT / and POST / store the pair and answer 204", async () => {
  const { app, service } = setup();
  let response = await app.request("/", putRequest('{"Key":"k","Value":"v"}'));
  assertEquals(response.status, 204);
  assertEquals(await response.text(), "");
  response = await app.request("/", { method: "POST", body: '{"Key":"k2","Value":""}' });
  assertEquals(response.status, 204);
  assertEquals(service.calls.map((c) => [c.method, c.args]), [["put", ["k", "v"]], [
    "put",
    ["k2", ""],
  ]]);
  assert(service.calls[0]!.signal instanceof AbortSignal);
});

Deno.test("PUT / accepts curl's default form content type and ignores extra fields", async () => {
  const { app, service } = setup();
  const response = await app.request(
    "/",
    putRequest('{"Key": "hello", "Value": "medium", "Other": 1}', {
      headers: { "content-type": "application/x-www-form-urlencoded" },
    }),
  );
  assertEquals(response.status, 204);
  assertEquals(service.data.get("hello"), "medium");
});

Deno.test("PUT / answers 400 to malformed JSON and to missing or ill-typed fields", async () => {
  const { app, service } = setup();
  const cases: [string, string][] = [
    ["", "not JSON"],
    ["{", "not JSON"],
    ["{'Key':'k'}", "not JSON"],
    ["[]", "must be a JSON object"],
    ["null", "must be a JSON object"],
    ['"k"', "must be a JSON object"],
    ['{"Value":"v"}', "the field Key is missing"],
    ['{"Key":"k"}', "the field Value is missing"],
    ['{"key":"k","value":"v"}', "the field Key is missing"],
    ['{"Key":"k","Value":5}', "the field Value must be a string, got number"],
    ['{"Key":"k","Value":true}', "the field Value must be a string, got boolean"],
    ['{"Key":"k","Value":null}', "the field Value must be a string, got null"],
    ['{"Key":"k","Value":{"a":1}}', "the field Value must be a string, got object"],
    ['{"Key":1,"Value":"v"}', "the field Key must be a string, got number"],
    ['{"Key":["k"],"Value":"v"}', "the field Key must be a string, got array"],
    ['{"Key":"","Value":"v"}', "the key: it is empty"],
    ['{"Key":".","Value":"v"}', 'the key ".": no URL can name it'],
    ['{"Key":"..","Value":"v"}', 'the key "..": no URL can name it'],
    ['{"Key":"k","Value":"a\\ud800b"}', "the field Value is not valid Unicode"],
    ['{"Key":"\\udc00","Value":"v"}', "the field Key is not valid Unicode"],
  ];
  for (const [body, message] of cases) {
    const error = await expectError(await app.request("/", putRequest(body)), 400);
    assertStringIncludes(error, message);
  }
  const invalidUtf8 = new Uint8Array([0x7b, 0xff, 0x7d]);
  assertStringIncludes(
    await expectError(await app.request("/", putRequest(invalidUtf8)), 400),
    "not valid UTF-8",
  );
  assertEquals(service.calls, []);
});

Deno.test("PUT / limits keys to keyBytesMax bytes (400) and values to valueBytesMax (413)", async () => {
  const { app, service } = setup({ keyBytesMax: 8, valueBytesMax: 10 });
  const put = (key: string, value: string) =>
    app.request("/", putRequest(JSON.stringify({ Key: key, Value: value })));
  assertEquals((await put("12345678", "1234567890")).status, 204);
  assertStringIncludes(await expectError(await put("123456789", "v"), 400), "9 bytes");
  // Limits count UTF-8 bytes, not UTF-16 code units: "ü" is 2 bytes.
  assertStringIncludes(await expectError(await put("üüüüü", "v"), 400), "10 bytes");
  assertStringIncludes(await expectError(await put("k", "12345678901"), 413), "11 bytes");
  assertEquals(service.calls.length, 1);
});

Deno.test("PUT / answers 413 to a streamed body over bodyBytesMax without reading it all", async () => {
  const { app, service } = setup({ bodyBytesMax: 1024 * 1024 });
  const { stream, pulled } = bigStream(64 * 1024 * 1024);
  const response = await app.request("/", putRequest(stream));
  assertStringIncludes(await expectError(response, 413), "larger than 1048576 bytes");
  assert(pulled() <= 1024 * 1024 + 2 * 65536, `read ${pulled()} bytes of the body`);
  assertEquals(service.calls, []);
});

Deno.test("PUT / answers 413 to a declared Content-Length over the limit before reading", async () => {
  const { app } = setup({ bodyBytesMax: 100 });
  const { stream, pulled } = bigStream(200);
  const response = await app.request(
    "/",
    putRequest(stream, { headers: { "content-length": "200" } }),
  );
  await expectError(response, 413);
  assert(pulled() <= 65536);
});

Deno.test("PUT / accepts a body of exactly bodyBytesMax bytes", async () => {
  const body = '{"Key":"k","Value":"v"}';
  const { app } = setup({ bodyBytesMax: body.length });
  assertEquals((await app.request("/", putRequest(body))).status, 204);
  const { app: smaller } = setup({ bodyBytesMax: body.length - 1 });
  await expectError(await smaller.request("/", putRequest(body)), 413);
});

Deno.test("PUT / answers 408 when the body does not arrive before the deadline", async () => {
  const { app, service } = setup({ requestTimeoutMs: 20 });
  const stalled = new ReadableStream<Uint8Array>({ pull: () => new Promise(() => {}) });
  const error = await expectError(await app.request("/", putRequest(stalled)), 408);
  assertStringIncludes(error, "within 20 ms");
  assertEquals(service.calls, []);
});

Deno.test("PUT / answers 408 when a body with a declared length does not arrive in time", async () => {
  const { app, service } = setup({ requestTimeoutMs: 20 });
  const stalled = new ReadableStream<Uint8Array>({ pull: () => new Promise(() => {}) });
  const init = putRequest(stalled, { headers: { "content-length": "30" } });
  const error = await expectError(await app.request("/", init), 408);
  assertStringIncludes(error, "within 20 ms");
  assertEquals(service.calls, []);
});

Deno.test("GET /{key} answers the value as text plus a newline, 404 JSON if absent", async () => {
  const { app, service } = setup();
  service.data.set("k", "hello");
  const response = await app.request("/k");
  assertEquals(response.status, 200);
  assertStringIncludes(response.headers.get("content-type") ?? "", "text/plain");
  assertEquals(await response.text(), "hello\n");
  assertStringIncludes(await expectError(await app.request("/missing"), 404), "Key not found");
});

Deno.test("GET /{key} percent-decodes the whole path: /a/b and /a%2Fb are both key a/b", async () => {
  const { app, service } = setup();
  const keys = [
    "a/b",
    "a b",
    "✓",
    "100%",
    "q?x=1#h",
    "mgmt/nodes",
    "a//b",
    "-_.~!*'()",
    // Line breaks, which a route pattern of "." would not match.
    "a\nb",
    "x\r",
    "u\u2028v\u2029",
    "\n",
  ];
  for (const key of keys) service.data.set(key, `value of ${key}`);
  const paths: [string, string][] = [
    ["/a/b", "a/b"],
    ["/a%2Fb", "a/b"],
    ["/a%2fb", "a/b"],
    ["/a%20b", "a b"],
    ["/%E2%9C%93", "✓"],
    ["/100%25", "100%"],
    ["/q%3Fx%3D1%23h", "q?x=1#h"],
    ["/mgmt%2Fnodes", "mgmt/nodes"],
    ["/a//b", "a//b"],
    ["/a/b?ignored=1", "a/b"],
  ];
  for (const [path, key] of paths) {
    const response = await app.request(path);
    assertEquals(response.status, 200, path);
    assertEquals(await response.text(), `value of ${key}\n`, path);
  }
  // encodeURIComponent round-trips every key.
  for (const key of keys) {
    const response = await app.request(`/${encodeURIComponent(key)}`);
    assertEquals(await response.text(), `value of ${key}\n`, key);
  }
  // And deleted under it.
  const removed = await app.request(`/${encodeURIComponent("a\nb")}`, { method: "DELETE" });
  assertEquals(removed.status, 204);
  assertEquals(service.data.has("a\nb"), false);
  // A key written with PUT is read back under its encoded path.
  await app.request("/", putRequest(JSON.stringify({ Key: "x/y z", Value: "1" })));
  assertEquals(await (await app.request("/x%2Fy%20z")).text(), "1\n");
  assertEquals(await (await app.request("/x/y%20z")).text(), "1\n");
});

Deno.test("GET /{key} answers 400 to bad percent-encoding and to a key over keyBytesMax", async () => {
  const { app, service } = setup({ keyBytesMax: 4 });
  assertStringIncludes(await expectError(await app.request("/%E0%A4%A"), 400), "percent");
  assertStringIncludes(await expectError(await app.request("/%FF"), 400), "percent");
  assertStringIncludes(await expectError(await app.request("/12345"), 400), "5 bytes");
  assertEquals(service.calls, []);
});

Deno.test("DELETE /{key} answers 204 if the key existed, 404 if not", async () => {
  const { app, service } = setup();
  service.data.set("a/b", "v");
  assertEquals((await app.request("/a%2Fb", { method: "DELETE" })).status, 204);
  assertStringIncludes(
    await expectError(await app.request("/a/b", { method: "DELETE" }), 404),
    "Key not found: a/b",
  );
  assertEquals(service.calls.map((c) => c.args), [["a/b"], ["a/b"]]);
});

Deno.test("GET /mgmt/nodes lists the members as JSON", async () => {
  const { app } = setup();
  const response = await app.request("/mgmt/nodes");
  assertEquals(response.status, 200);
  assertEquals(await response.json(), MEMBERS);
});

Deno.test("DELETE /mgmt/nodes/{id} answers 204, 404 for an unknown member, 400 for a bad id", async () => {
  const { app, service } = setup();
  assertEquals((await app.request("/mgmt/nodes/2", { method: "DELETE" })).status, 204);
  assertEquals(service.calls[0]!.args, [2]);
  assertStringIncludes(
    await expectError(await app.request("/mgmt/nodes/7", { method: "DELETE" }), 404),
    "no such member",
  );
  for (const id of ["abc", "0", "-1", "1.5", "01", "1e3", "99999999999999999999"]) {
    const error = await expectError(
      await app.request(`/mgmt/nodes/${id}`, { method: "DELETE" }),
      400,
    );
    assertStringIncludes(error, "positive integer");
  }
  assertEquals(service.calls.length, 2);
});

Deno.test("GET /mgmt/status and GET /mgmt/health answer JSON", async () => {
  const { app } = setup();
  const status = await app.request("/mgmt/status");
  assertEquals(status.status, 200);
  assertEquals((await status.json()).role, "leader");
  const health = await app.request("/mgmt/health");
  assertEquals(health.status, 200);
  assertEquals(await health.json(), { status: "ok" });
});

Deno.test("unknown routes answer 404 JSON", async () => {
  const { app } = setup();
  for (
    const [method, path] of [["GET", "/"], ["PATCH", "/"], ["DELETE", "/"], ["PUT", "/k"], [
      "POST",
      "/mgmt/nodes",
    ]]
  ) {
    const error = await expectError(await app.request(path!, { method: method! }), 404);
    assertStringIncludes(error, "No such route");
  }
});

Deno.test("onError maps UnavailableError and its subclasses to 503 with Retry-After", async () => {
  const cases: [Error, string][] = [
    [new UnavailableError("Cannot serve: no leader", { retryAfterSeconds: 3 }), "3"],
    [new UnavailableError("Cannot serve: no quorum", { retryAfterSeconds: 0.2 }), "1"],
    [new NotLeaderError("Cannot serve: not the leader", 2), "1"],
    [new OutcomeUnknownError("Cannot confirm the write: outcome unknown"), "1"],
    [new StoppedError("Cannot serve: the node is stopping"), "1"],
  ];
  for (const [error, retryAfter] of cases) {
    const { app, service } = setup();
    service.fail = error;
    const requests: [string, RequestInit][] = [
      ["/", putRequest('{"Key":"k","Value":"v"}')],
      ["/k", {}],
      ["/k", { method: "DELETE" }],
      ["/mgmt/nodes", {}],
      ["/mgmt/nodes/1", { method: "DELETE" }],
    ];
    for (const [path, init] of requests) {
      const response = await app.request(path, init);
      assertEquals(response.headers.get("retry-after"), retryAfter, `${error.name} ${path}`);
      assertEquals(await expectError(response, 503), error.message);
    }
  }
});

Deno.test("onError maps anything else to 500 with a log line and no details", async () => {
  for (const error of [new Error("boom"), new TypeError("x is undefined"), "a string"]) {
    const { app, service, logs } = setup();
    service.fail = error;
    const response = await app.request("/k");
    assertEquals(await expectError(response, 500), "Internal server error");
    assertEquals(response.headers.get("retry-after"), null);
    assertEquals(logs.length, 1);
    assertEquals(logs[0]![0], "request failed");
    assertEquals(logs[0]![1].method, "GET");
    assertEquals(logs[0]![1].path, "/k");
    assertStringIncludes(String(logs[0]![1].error), error instanceof Error ? error.message : error);
  }
  const { app, service, logs } = setup();
  service.fail = new Error("status broke");
  await expectError(await app.request("/mgmt/status"), 500);
  assertEquals(logs.length, 1);
});

Deno.test("each request's signal aborts at requestTimeoutMs; a service that gives up answers 503", async () => {
  const service = new FakeService();
  let seen: AbortSignal | undefined;
  service.put = (_key, _value, signal) => {
    seen = signal;
    return new Promise((_resolve, reject) => {
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  };
  const app = createApp({ service, requestTimeoutMs: 20 });
  const started = performance.now();
  const response = await app.request("/", putRequest('{"Key":"k","Value":"v"}'));
  assert(performance.now() - started < 2000);
  assertEquals(response.headers.get("retry-after"), "1");
  assertStringIncludes(await expectError(response, 503), "Cannot answer within 20 ms");
  assert(seen?.aborted);
  assertEquals((seen.reason as DOMException).name, "TimeoutError");
});

Deno.test("a request that finishes in time leaves its signal unaborted and no timer behind", async () => {
  const { app, service } = setup({ requestTimeoutMs: 60_000 });
  service.data.set("k", "v");
  assertEquals((await app.request("/k")).status, 200);
  assertEquals(service.calls[0]!.signal.aborted, false);
  // Deno's test sanitizer fails this test if the 60 s deadline timer leaked.
});

Deno.test("createApp() rejects limits that are not positive integers", () => {
  const service = new FakeService();
  assertThrows(() => createApp({ service, bodyBytesMax: 0 }), RangeError, "bodyBytesMax");
  assertThrows(() => createApp({ service, requestTimeoutMs: -1 }), RangeError, "requestTimeoutMs");
  assertThrows(() => createApp({ service, keyBytesMax: 1.5 }), RangeError, "keyBytesMax");
});
