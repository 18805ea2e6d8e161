// Runs against the cluster kind-tests/run prepared (KUBECONFIG set, samples applied).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import jwt from "jsonwebtoken";
import WebSocket from "ws";

const NS = "chatfleet";
const SECRET = "sample-only-change-me-0123456789abcdef"; // manifests/samples/token-secret.yaml

const kubectl = (...args) => execFileSync("kubectl", ["-n", NS, ...args], { encoding: "utf8" });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function roomStatus(name, until, limitMs = 180_000) {
  const start = Date.now();
  for (;;) {
    const room = JSON.parse(kubectl("get", "chatroom", name, "-o", "json"));
    if (room.status && until(room.status)) return room.status;
    if (Date.now() - start > limitMs) throw new Error(`${name}: ${JSON.stringify(room.status)}`);
    await sleep(1000);
  }
}

/** Port-forwards to a pod; resolves with the local port once it listens. */
async function forward(pod) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn("kubectl", ["-n", NS, "port-forward", `pod/${pod}`, `${port}:8080`]);
  await new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => d.toString().includes("Forwarding") && resolve());
    child.on("exit", (code) => reject(new Error(`port-forward exited ${code}`)));
  });
  return { port, stop: () => child.kill() };
}

function token(user) {
  const exp = Math.floor(Date.now() / 1000) + 3600;
  return jwt.sign({ room: `${NS}/case-1042`, sub: user, name: user, role: "agent", exp }, SECRET);
}

/** A client that queues every frame it receives. */
async function join(port, user, since) {
  const query = `token=${token(user)}${since ? `&since=${since}` : ""}`;
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/rooms/${NS}/case-1042/ws?${query}`);
  const frames = [];
  const waiters = [];
  ws.on("message", (data) => {
    frames.push(JSON.parse(data.toString()));
    waiters.splice(0).forEach((w) => w());
  });
  await new Promise((resolve, reject) => { ws.on("open", resolve); ws.on("error", reject); });
  const next = async (type) => {
    for (;;) {
      const i = frames.findIndex((f) => f.type === type);
      if (i >= 0) return frames.splice(i, 1)[0];
      await new Promise((r) => waiters.push(r));
    }
  };
  return { ws, next, send: (body) => ws.send(JSON.stringify({ type: "send", body })) };
}

test("a sample room is placed, chats, moves when its node dies, and resumes", async () => {
  const placed = await roomStatus("case-1042", (s) => s.phase === "Placed");
  assert.match(placed.endpoint, /^ws:\/\/chat-\d\.chat\.chatfleet\.svc:8080\/v1\/rooms\/chatfleet\/case-1042\/ws$/);

  let pf = await forward(placed.node);
  const alice = await join(pf.port, "alice");
  const bob = await join(pf.port, "bob");
  await alice.next("welcome");
  await bob.next("welcome");
  alice.send("hello from alice");
  const heard = await bob.next("message");
  assert.equal(heard.body, "hello from alice");
  pf.stop();

  // The node dies: the operator must move the room to another pod.
  kubectl("delete", "pod", placed.node, "--grace-period=0", "--force");
  const moved = await roomStatus("case-1042", (s) => s.phase === "Placed" && s.node !== placed.node);
  assert.notEqual(moved.node, placed.node);

  pf = await forward(moved.node);
  const again = await join(pf.port, "bob", heard.id - 1);
  const replayed = await again.next("message");
  assert.equal(replayed.id, heard.id);
  assert.equal(replayed.body, "hello from alice");
  again.ws.close();
  pf.stop();

  kubectl("delete", "chatroom", "case-1042", "--wait=true", "--timeout=60s");
});
