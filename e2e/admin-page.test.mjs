// The admin page in real headless Chromium against two real chatnode processes sharing a real
// redis-server: it shows both nodes and their rooms, who is in each room on which node, and
// follows them live; broadcasts reach the chat page, a drain shows, and a wrong key is told
// so.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { here, startNode, startRedis, stop, launchBrowser } from "./support.mjs";

const ADMIN_KEY = "e2e-admin-key";

let redis;
let nodes = [];
let browser;

before(async () => {
  redis = await startRedis();
  for (const name of ["chat-0", "chat-1"]) {
    nodes.push(await startNode([
      "--redis-url", redis.url, "--node-name", name, "--heartbeat-ms", "200",
      "--insecure-dev-auth", "--admin-api-key", ADMIN_KEY,
    ]));
  }
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const node of nodes) await stop(node.child);
  await stop(redis?.child);
});

const nodeRow = (name) => `#nodes tr[data-node='${name}']`;

test("the admin page follows the fleet live and drives it", async () => {
  const context = await browser.newContext();
  const admin = await context.newPage();
  admin.on("dialog", (dialog) => dialog.accept());
  await admin.goto(`${nodes[0].base}/admin#key=${ADMIN_KEY}`);
  await admin.waitForSelector(nodeRow("chat-0"));
  await admin.waitForSelector(nodeRow("chat-1"));

  // A customer joins on the other node: the page shows the room without a reload.
  const chat = await context.newPage();
  await chat.goto(`${nodes[1].base}/?room=support/case-1&user=dana&name=Dana`);
  await chat.waitForSelector("#status:has-text('connected to chat-1')");
  const room = "#rooms tr[data-room='support/case-1']";
  await admin.waitForSelector(`${room} td.members:text-is('1')`);
  await admin.waitForSelector(`${room} td.people:text-is('Dana (customer)')`);
  await admin.waitForSelector(`${nodeRow("chat-1")} td.users:text-is('1 / 300')`);

  // An agent joins the same room on the other node: one row, both nodes, who is where.
  const agent = await context.newPage();
  await agent.goto(`${nodes[0].base}/?room=support/case-1&user=ann&name=Ann&role=agent`);
  await agent.waitForSelector("#status:has-text('connected to chat-0')");
  await admin.waitForSelector(`${room} td.members:text-is('2')`);
  await admin.waitForSelector(`${room} td.node:text-is('chat-0, chat-1')`);
  await admin.waitForSelector(`${room} td.people:text-is('Ann (agent) on chat-0, Dana (customer) on chat-1')`);
  assert.equal((await admin.$$("#rooms tr[data-room]")).length, 1, "one row per room");
  // She leaves: the page follows.
  await agent.close();
  await admin.waitForSelector(`${room} td.people:text-is('Dana (customer)')`);

  // A notice to every room reaches the chat page through Redis.
  await admin.fill("#broadcast-body", "maintenance at 18:00 UTC");
  await admin.click("#broadcast-send");
  await chat.waitForSelector("#messages li.notice:has-text('maintenance at 18:00 UTC')");
  await admin.waitForSelector("#notice:has-text('notice sent to every room')");

  // Drain chat-0: it says so, and the other stays serving.
  await admin.click(`${nodeRow("chat-0")} button:has-text('Drain')`);
  await admin.waitForSelector(`${nodeRow("chat-0")} td.state:text-is('draining')`);
  assert.equal(await admin.textContent(`${nodeRow("chat-1")} td.state`), "serving");

  // The user's sessions, and ending them: the chat page is told.
  await admin.fill("#sessions-user", "dana");
  await admin.click("#sessions-form button[type='submit']");
  await admin.waitForSelector("#sessions tr[data-session^='chat-1/']");
  await admin.click("#sessions-end-all");
  await chat.waitForSelector("#messages li.system:has-text('session_ended')");
  await admin.waitForSelector("#sessions td.empty:has-text('no sessions')");
  await admin.screenshot({ path: join(here, "..", "target", "e2e-admin-page.png"), fullPage: true });
  await context.close();
});

test("a wrong key is told so and shows nothing", async () => {
  const page = await browser.newPage();
  await page.goto(`${nodes[0].base}/admin#key=not-the-key`);
  await page.waitForSelector("#error:has-text('X-API-Key')");
  assert.equal(await page.$(nodeRow("chat-0")), null);
  await page.close();
});

test("the API page renders every operation of the document", async () => {
  const page = await browser.newPage();
  await page.goto(`${nodes[0].base}/api`);
  await page.waitForSelector("#ops .op h3");
  const doc = await (await fetch(`${nodes[0].base}/openapi.json`)).json();
  const operations = Object.values(doc.paths).flatMap((item) => Object.keys(item)).length;
  const rendered = await page.$$eval("#ops .op[id]", (els) => els.filter((e) => !e.id.startsWith("schema-")).length);
  assert.equal(rendered, operations);
  await page.waitForSelector("#ops h3:has-text('/v1/admin/broadcast')");
  await page.close();
});
