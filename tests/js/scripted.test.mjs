// Drives scripted endpoints of `rpq serve --config tests/js/endpoints.toml --clock virtual` with plain
// fetch: nothing Python here. RPQ_ROOT is the server's root URL, RPQ_EMULATOR_API_KEY its key
// (.ci/js.sh starts the server and sets both).
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";

const root = process.env.RPQ_ROOT;
const key = process.env.RPQ_EMULATOR_API_KEY;
if (!root || !key) throw new Error("set RPQ_ROOT and RPQ_EMULATOR_API_KEY (see .ci/js.sh)");

async function call(method, path, body) {
  const response = await fetch(root + path, {
    method,
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

const runsync = async (endpoint, input) => (await call("POST", `/v2/${endpoint}/runsync`, { input })).body;
const advance = (seconds) => call("POST", "/_emulator/advance", { seconds });

beforeEach(async () => {
  const reset = await call("POST", "/_emulator/reset");
  assert.equal(reset.status, 200);
  assert.equal(reset.body.now, 0);
});

test("a reset leaves no job and the clock at 0", async () => {
  await call("POST", "/v2/slow/run", { input: {} });
  assert.equal((await call("GET", "/_emulator/jobs")).body.jobs.length, 1);
  await call("POST", "/_emulator/reset");
  assert.deepEqual((await call("GET", "/_emulator/jobs")).body, { jobs: [] });
  assert.equal((await call("GET", "/v2/slow/health")).body.jobs.inQueue, 0);
});

test("answers are matched on the input", async () => {
  assert.deepEqual((await runsync("greeter", { name: "ada" })).output, { greeting: "hello ada" });
  assert.deepEqual((await runsync("greeter", { name: "bob" })).output, { greeting: "hello stranger" });
});

test("a sequence fails first, then succeeds, and starts over after a reset", async () => {
  const first = await runsync("flaky", {});
  assert.equal(first.status, "FAILED");
  assert.equal(first.error, "CUDA out of memory");
  assert.equal((await runsync("flaky", {})).output, "ok");
  assert.equal((await runsync("flaky", {})).output, "ok"); // exhausted = repeat_last
  await call("POST", "/_emulator/reset");
  assert.equal((await runsync("flaky", {})).status, "FAILED");
});

test("a delay is virtual seconds: the job ends when the clock is advanced", async () => {
  const { id } = (await call("POST", "/v2/slow/run", { input: {} })).body;
  await advance(29);
  assert.equal((await call("GET", `/v2/slow/status/${id}`)).body.status, "IN_PROGRESS");
  await advance(1);
  const done = (await call("GET", `/v2/slow/status/${id}`)).body;
  assert.equal(done.status, "COMPLETED");
  assert.equal(done.output, "done");
  assert.equal(done.executionTime, 30000);
});

test("stream chunks come one by one with their delays", async () => {
  const { id } = (await call("POST", "/v2/tokens/run", { input: {} })).body;
  await advance(1);
  assert.deepEqual((await call("GET", `/v2/tokens/stream/${id}`)).body.stream, [{ output: "Hel" }]);
  await advance(2);
  assert.deepEqual((await call("GET", `/v2/tokens/stream/${id}`)).body.stream, [{ output: "lo" }]);
  assert.deepEqual((await call("GET", `/v2/tokens/status/${id}`)).body.output, ["Hel", "lo"]);
});

test("an endpoint is created, used and removed at run time", async () => {
  const created = await call("PUT", "/_emulator/endpoints/adhoc", {
    script: { answers: [{ output: 1 }, { output: 2 }], exhausted: "error" },
  });
  assert.equal(created.status, 201);
  assert.deepEqual([(await runsync("adhoc", {})).output, (await runsync("adhoc", {})).output], [1, 2]);
  assert.match((await runsync("adhoc", {})).error, /used up/);
  const broken = await call("PUT", "/_emulator/endpoints/adhoc", { script: { answers: [] } });
  assert.equal(broken.status, 400);
  assert.match(broken.body.error, /script\.answers/);
  assert.equal((await call("DELETE", "/_emulator/endpoints/adhoc")).status, 200);
  assert.equal((await call("POST", "/v2/adhoc/run", { input: {} })).status, 404);
});

test("faults are switched on and off over HTTP", async () => {
  await call("PUT", "/_emulator/faults", { error_503: 1 });
  assert.equal((await call("POST", "/v2/greeter/run", { input: {} })).status, 503);
  await call("PUT", "/_emulator/faults", {});
  assert.equal((await call("POST", "/v2/greeter/run", { input: {} })).status, 200);
});

test("the control plane needs the key", async () => {
  const response = await fetch(`${root}/_emulator/reset`, { method: "POST" });
  assert.equal(response.status, 401);
});
