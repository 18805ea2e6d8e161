// The chat page in real headless Chromium against a real chatnode process: two tabs chat,
// token links from the room API work, and a dropped connection resumes without loss.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { here, startNode, stop, launchBrowser } from "./support.mjs";

const API_KEY = "e2e-key";

let node;
let base;
let browser;

before(async () => {
  ({ child: node, base } = await startNode(["--insecure-dev-auth", "--api-key", API_KEY]));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stop(node);
});

async function send(page, text) {
  await page.fill("#body", text);
  await page.click("#send");
}

async function messages(page) {
  return page.$$eval("#messages li.message .body", (els) => els.map((e) => e.textContent));
}

test("two tabs chat through the page", async () => {
  const context = await browser.newContext();
  const ann = await context.newPage();
  const bob = await context.newPage();
  await ann.goto(`${base}/?room=default/lobby&user=ann`);
  await ann.waitForSelector("#status:has-text('connected to')");
  await bob.goto(`${base}/?room=default/lobby&user=bob`);
  await bob.waitForSelector("#status:has-text('connected to')");
  await ann.waitForSelector("#members li[data-user='bob']");

  await send(ann, "hello from ann");
  await bob.waitForSelector("#messages li.message:has-text('hello from ann')");
  await send(bob, "hi ann");
  await ann.waitForSelector("#messages li.message:has-text('hi ann')");
  assert.deepEqual(await messages(ann), ["hello from ann", "hi ann"]);
  assert.deepEqual(await messages(bob), ["hello from ann", "hi ann"]);
  await bob.screenshot({ path: join(here, "..", "target", "e2e-chat-page.png") });
  await context.close();
});

test("the join form works with a name in dev auth", async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/`);
  await page.fill("#join-room", "default/form-room");
  await page.fill("#join-name", "carol");
  await page.click("#join-button");
  await page.waitForSelector("#status:has-text('as carol')");
  await send(page, "typed in the form");
  await page.waitForSelector("#messages li.message:has-text('typed in the form')");
  await page.close();
});

test("token links from the room API open the room", async () => {
  const api = (path, body) => fetch(`${base}${path}`, {
    method: "POST",
    headers: { "x-api-key": API_KEY, "content-type": "application/json" },
    body: JSON.stringify(body),
  }).then(async (r) => { assert.ok(r.ok, `${path}: ${r.status}`); return r.json(); });
  await api("/v1/rooms", { namespace: "support", name: "case-77" });
  const customer = await api("/v1/rooms/support/case-77/tokens", { user: "cust-1", name: "Dana" });
  const agent = await api("/v1/rooms/support/case-77/tokens", { user: "agent-1", name: "Sam", role: "agent" });

  const context = await browser.newContext();
  const dana = await context.newPage();
  const sam = await context.newPage();
  await dana.goto(customer.chat_url);
  await sam.goto(agent.chat_url);
  await dana.waitForSelector("#status:has-text('as Dana')");
  await sam.waitForSelector("#status:has-text('as Sam')");
  await send(dana, "my order is stuck");
  await sam.waitForSelector("#messages li.message:has-text('my order is stuck')");
  await context.close();
});

test("a dropped connection resumes and shows what was missed, once", async () => {
  const context = await browser.newContext();
  const ann = await context.newPage();
  const bob = await context.newPage();
  await ann.goto(`${base}/?room=default/resume&user=ann`);
  await bob.goto(`${base}/?room=default/resume&user=bob`);
  await ann.waitForSelector("#status:has-text('connected to')");
  await bob.waitForSelector("#status:has-text('connected to')");
  await send(ann, "before");
  await bob.waitForSelector("#messages li.message:has-text('before')");

  // Bob's socket drops; ann talks while he is away.
  await bob.evaluate(() => state.ws.close());
  await send(ann, "while you were away");
  await bob.waitForSelector("#status:has-text('resumed')");
  await bob.waitForSelector("#messages li.message:has-text('while you were away')");
  await send(ann, "after");
  await bob.waitForSelector("#messages li.message:has-text('after')");
  assert.deepEqual(await messages(bob), ["before", "while you were away", "after"]);
  await context.close();
});

test("typing, read markers and moderation show on the page", async () => {
  const call = (method, path, body) => fetch(`${base}${path}`, {
    method,
    headers: { "x-api-key": API_KEY, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  }).then((r) => { assert.ok(r.ok, `${method} ${path}: ${r.status}`); });
  const context = await browser.newContext();
  const ann = await context.newPage();
  const bob = await context.newPage();
  await ann.goto(`${base}/?room=default/moderated&user=ann`);
  await ann.waitForSelector("#status:has-text('connected to')");
  await bob.goto(`${base}/?room=default/moderated&user=bob`);
  await bob.waitForSelector("#status:has-text('connected to')");

  await bob.type("#body", "hel");
  await ann.waitForSelector("#typing:has-text('bob is typing')");
  await send(ann, "are you there?");
  await bob.waitForSelector("#messages li.message:has-text('are you there?')");
  // Bob's page marks it read; ann's page shows it.
  await ann.waitForSelector("#seen:has-text('seen by bob')");
  await ann.waitForSelector("#members li[data-user='bob'] .read:has-text('#1')");

  await call("POST", "/v1/rooms/default/moderated/members/bob/mute", { seconds: 60, reason: "calm down" });
  await ann.waitForSelector("#messages li.moderation:has-text('bob muted until')");
  await bob.waitForSelector("#messages li.moderation:has-text('calm down')");
  assert.equal(await bob.isDisabled("#body"), true, "a muted member cannot write");
  await call("DELETE", "/v1/rooms/default/moderated/members/bob/mute");
  await bob.waitForSelector("#body:not([disabled])");

  await call("DELETE", "/v1/rooms/default/moderated/members/bob?reason=spam");
  await bob.waitForSelector("#messages li.moderation:has-text('you removed from the room: spam')");
  await bob.waitForSelector("#messages li.system:has-text('error removed')");
  await ann.waitForSelector("#messages li.moderation:has-text('bob removed from the room: spam')");
  await context.close();
});
