// What the browser tests share: real chatnode and redis-server processes on free ports, and
// headless Chromium (Debian's package) driven by playwright-core.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const here = dirname(fileURLToPath(import.meta.url));
const CHATNODE = process.env.CHATNODE_BIN || join(here, "..", "target", "debug", "chatnode");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** Starts a chatnode with `args`; resolves to { child, base } once it prints its address. */
export async function startNode(args) {
  const child = spawn(CHATNODE, ["--listen", "127.0.0.1:0", ...args], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  let out = "";
  child.stdout.setEncoding("utf8");
  for await (const chunk of child.stdout) {
    out += chunk;
    const match = out.match(/listening on (http:\/\/[\d.:]+)/);
    if (match) return { child, base: match[1] };
  }
  throw new Error(`chatnode exited before listening: ${out}`);
}

async function freePort() {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** Starts a throwaway redis-server; resolves to { child, url } once it accepts connections. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  let out = "";
  child.stdout.setEncoding("utf8");
  for await (const chunk of child.stdout) {
    out += chunk;
    if (out.includes("Ready to accept connections")) return { child, url: `redis://127.0.0.1:${port}` };
  }
  throw new Error(`redis-server exited: ${out}`);
}

export async function stop(child) {
  if (!child || child.exitCode !== null) return;
  child.kill();
  await once(child, "exit");
}

export function launchBrowser() {
  // Playwright gives every launch a fresh, empty profile of its own.
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}
