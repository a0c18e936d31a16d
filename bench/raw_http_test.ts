import { assertEquals, assertRejects } from "../tests/assert.ts";
import { rawRequester } from "./raw_http.ts";

Deno.test("rawRequester: Content-Length, chunked and empty bodies over one kept-alive connection", async () => {
  const connections = new Set<string>();
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req, info) => {
      connections.add(`${info.remoteAddr.hostname}:${info.remoteAddr.port}`);
      const url = new URL(req.url);
      if (url.pathname === "/echo") {
        return new Response(`${req.method} ${await req.text()}`, { status: 201 });
      }
      if (url.pathname === "/chunked") {
        // A streamed body has no Content-Length: it goes out chunked.
        const body = new ReadableStream({
          start(c) {
            c.enqueue(new TextEncoder().encode("héllo, "));
            c.enqueue(new TextEncoder().encode("world".repeat(5000)));
            c.close();
          },
        });
        return new Response(body);
      }
      return new Response(null, { status: 204 });
    },
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  const request = rawRequester(5000);
  for (let i = 0; i < 20; i++) {
    assertEquals(await request("PUT", `${base}/echo`, `{"n":${i},"s":"ü"}`), {
      status: 201,
      body: `PUT {"n":${i},"s":"ü"}`,
    });
    const chunked = await request("GET", `${base}/chunked`, undefined);
    assertEquals(chunked.status, 200);
    assertEquals(chunked.body, "héllo, " + "world".repeat(5000));
    assertEquals(await request("DELETE", `${base}/none`, undefined), { status: 204, body: "" });
  }
  assertEquals(connections.size, 1, "one connection for 60 sequential requests");
  await assertRejects(() => request("GET", "https://127.0.0.1/", undefined), Error, "only http://");
});

Deno.test("rawRequester: a server that never answers times the request out", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of listener) accepted.push(c);
  })();
  const request = rawRequester(200);
  await assertRejects(
    () => request("GET", `http://127.0.0.1:${listener.addr.port}/`, undefined),
    Error,
    "timed out after 200 ms",
  );
  listener.close();
  await accepting.catch(() => {});
  for (const c of accepted) c.close();
});
