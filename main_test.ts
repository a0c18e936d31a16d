import { assert, assertEquals, assertStringIncludes, assertThrows } from "./tests/assert.ts";
import { FlagError, type Flags, parseAddress, parseFlags, USAGE, VERSION } from "./main.ts";
import { runProgram } from "./tests/harness.ts";

const BASE: Flags = { stateDir: "/tmp/n1", raft: ":8080", api: ":9090" };

Deno.test("parseFlags() accepts every spelling of every flag", () => {
  const spellings: string[][] = [
    ["--state-dir", "/tmp/n1", "--raft", ":8080", "--api", ":9090"],
    ["--state-dir=/tmp/n1", "--raft=:8080", "--api=:9090"],
    ["-state_dir=/tmp/n1", "-raft", ":8080", "-api", ":9090"],
    ["-state_dir", "/tmp/n1", "-raft=:8080", "-api=:9090"],
    ["--state_dir", "/tmp/n1", "--raft", ":8080", "-api", ":9090"],
    ["--state_dir=/tmp/n1", "-raft", ":8080", "--api=:9090"],
    ["-state-dir", "/tmp/n1", "-raft", ":8080", "-api", ":9090"],
    ["-api", ":9090", "-raft", ":8080", "-state_dir=/tmp/n1"],
  ];
  for (const args of spellings) assertEquals(parseFlags(args), BASE, args.join(" "));
});

Deno.test("parseFlags() reads the tutorial's command lines verbatim", () => {
  assertEquals(parseFlags(["-state_dir=/tmp/t/1", "-raft", ":8080", "-api", ":9090"]), {
    stateDir: "/tmp/t/1",
    raft: ":8080",
    api: ":9090",
  });
  assertEquals(
    parseFlags(["-state_dir=/tmp/t/2", "-raft", ":8081", "-api", ":9091", "-join", ":8080"]),
    { stateDir: "/tmp/t/2", raft: ":8081", api: ":9091", join: ":8080" },
  );
});

Deno.test("parseFlags() reads the optional flags in every spelling", () => {
  const expected: Flags = {
    ...BASE,
    join: "10.0.0.1:8080",
    advertiseRaft: "node1.example:8080",
    advertiseApi: "[::1]:9090",
    logLevel: "debug",
  };
  const optional: string[][] = [
    ["--join", "10.0.0.1:8080", "--advertise-raft", "node1.example:8080"],
    ["--join=10.0.0.1:8080", "--advertise-raft=node1.example:8080"],
    ["-join", "10.0.0.1:8080", "-advertise_raft", "node1.example:8080"],
    ["-join=10.0.0.1:8080", "--advertise_raft=node1.example:8080"],
  ];
  for (const extra of optional) {
    const args = [
      ...["--state-dir", "/tmp/n1", "--raft", ":8080", "--api", ":9090"],
      ...extra,
      ...["--advertise-api", "[::1]:9090", "-log_level=debug"],
    ];
    assertEquals(parseFlags(args), expected, extra.join(" "));
  }
});

Deno.test("parseFlags() keeps values that contain = or start with a dash after =", () => {
  assertEquals(
    parseFlags(["--state-dir=/tmp/a=b", "--raft=:1", "--api=:2"]),
    { stateDir: "/tmp/a=b", raft: ":1", api: ":2" },
  );
  assertEquals(
    parseFlags(["--state-dir=-odd", "--raft=:1", "--api=:2"]),
    { stateDir: "-odd", raft: ":1", api: ":2" },
  );
});

Deno.test("parseFlags() returns help for --help, -h and -help, and version for --version", () => {
  for (const flag of ["--help", "-h", "-help"]) assertEquals(parseFlags([flag]), { help: true });
  for (const flag of ["--version", "-version"]) {
    assertEquals(parseFlags([flag]), { version: true });
  }
  // Help wins over missing or invalid flag values, and over --version.
  assertEquals(parseFlags(["--raft", "nonsense", "--help"]), { help: true });
  assertEquals(parseFlags(["--version", "-h"]), { help: true });
});

Deno.test("parseFlags() accepts addresses HOST:PORT, :PORT and [IPV6]:PORT with ports 0-65535", () => {
  for (
    const address of [
      ":0",
      ":65535",
      "127.0.0.1:8080",
      "localhost:1",
      "a-b.example.com:80",
      "[::]:9",
    ]
  ) {
    assertEquals(parseFlags(["--state-dir=d", `--raft=${address}`, `--api=${address}`]), {
      stateDir: "d",
      raft: address,
      api: address,
    });
  }
});

Deno.test("parseFlags() throws a one-line FlagError for every mistake", () => {
  const base = ["--state-dir", "d", "--raft", ":1", "--api", ":2"];
  const cases: [string[], string][] = [
    [[...base, "--bogus"], "Unknown flag: --bogus"],
    [[...base, "-bogus=1"], "Unknown flag: -bogus"],
    [[...base, "-x"], "Unknown flag: -x"],
    [[...base, "-hv"], "Unknown flag: -hv"],
    [[...base, "extra"], "Unexpected argument: extra"],
    [[...base, "-"], "Unexpected argument: -"],
    [[...base, "--", "x"], "Unexpected argument"],
    [["--state-dir"], "Flag needs a value: --state-dir"],
    [["-raft"], "Flag needs a value: -raft"],
    [["-join", "-raft", ":1"], "Flag needs a value: -join"],
    [["--help=yes"], "Flag takes no value: --help=yes"],
    [["-version=1"], "Flag takes no value: -version=1"],
    [[...base, "--raft", ":3"], "Flag given more than once: --raft"],
    [[...base, "-state_dir=e"], "Flag given more than once: --state-dir"],
    [["--raft", ":1", "--api", ":2"], "Missing required flag: --state-dir"],
    [["--state-dir", "d", "--api", ":2"], "Missing required flag: --raft"],
    [["--state-dir", "d", "--raft", ":1"], "Missing required flag: --api"],
    [["--state-dir=", "--raft", ":1", "--api", ":2"], "Invalid --state-dir: it is empty"],
    [["--state-dir=d", "--raft=8080", "--api=:2"], 'Invalid --raft "8080": want HOST:PORT'],
    [["--state-dir=d", "--raft=:1", "--api=:"], 'Invalid --api ":": want HOST:PORT'],
    [["--state-dir=d", "--raft=:65536", "--api=:2"], "port must be 0-65535"],
    [["--state-dir=d", "--raft=:1", "--api=host:-1"], "want HOST:PORT"],
    [["--state-dir=d", "--raft=:1", "--api=host:port"], "want HOST:PORT"],
    [["--state-dir=d", "--raft=:1", "--api=a b:1"], "want HOST:PORT"],
    [["--state-dir=d", "--raft=:1", "--api=::1:2"], "want HOST:PORT"],
    [[...base, "--join=:0"], 'Invalid --join ":0": port 0 cannot be dialled'],
    [[...base, "--join=host"], "Invalid --join"],
    [[...base, "--advertise-raft=:99999"], "Invalid --advertise-raft"],
    [[...base, "--advertise-api=x:0"], "Invalid --advertise-api"],
    [[...base, "--log-level=loud"], 'Invalid --log-level "loud"'],
  ];
  for (const [args, message] of cases) {
    const error = assertThrows(() => parseFlags(args), FlagError, message);
    assert(!error.message.includes("\n"), `multi-line message: ${error.message}`);
    assertEquals(error.name, "FlagError");
  }
});

Deno.test("parseAddress() splits host and port", () => {
  assertEquals(parseAddress(":8080"), { host: "", port: 8080 });
  assertEquals(parseAddress("127.0.0.1:0"), { host: "127.0.0.1", port: 0 });
  assertEquals(parseAddress("[::1]:9090"), { host: "::1", port: 9090 });
  assertThrows(() => parseAddress("nope"), SyntaxError, "want HOST:PORT or :PORT");
  assertThrows(() => parseAddress(":70000"), SyntaxError, "0-65535");
});

Deno.test("USAGE names every flag and VERSION is semver", () => {
  for (
    const flag of [
      "--state-dir",
      "--raft",
      "--api",
      "--join",
      "--advertise-raft",
      "--advertise-api",
      "--log-level",
      "--help",
      "--version",
    ]
  ) {
    assertStringIncludes(USAGE, flag);
  }
  assert(/^\d+\.\d+\.\d+$/.test(VERSION));
});

Deno.test("raftkv --help and --version print to stdout and exit 0", async () => {
  const help = await runProgram(["--help"]);
  assertEquals(help.code, 0);
  assertEquals(help.stdout, `${USAGE}\n`);
  const version = await runProgram(["-version"]);
  assertEquals(version.code, 0);
  assertEquals(version.stdout, `raftkv ${VERSION}\n`);
});

Deno.test("raftkv with a bad flag prints one error line and a hint on stderr and exits 2", async () => {
  const result = await runProgram(["-state_dir=/tmp/x", "-raft", ":8080", "-bogus"]);
  assertEquals(result.code, 2);
  assertEquals(result.stdout, "");
  assertEquals(
    result.stderr,
    "raftkv: Unknown flag: -bogus\nTry 'raftkv --help' for more information.\n",
  );
});

Deno.test("parseFlags ignores a leading -- (as `deno task start -- ...` passes it)", () => {
  assertEquals(parseFlags(["--", "--state-dir", "d", "--raft", ":1", "--api", ":2"]), {
    stateDir: "d",
    raft: ":1",
    api: ":2",
  });
});
