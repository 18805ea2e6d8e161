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

/**
 * Resolves with the first match of `pattern` in the child's stdout. It keeps reading stdout
 * afterwards: a pipe nobody reads, or one that is closed, would stall or kill the child at its
 * next line.
 */
function firstMatch(child, pattern, what) {
  return new Promise((resolve, reject) => {
    let out = "";
    let found = false;
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      if (found) return;
      out += chunk;
      const match = out.match(pattern);
      if (match) {
        found = true;
        resolve(match);
      }
    });
    child.on("exit", (code) => {
      if (!found) reject(new Error(`${what} exited (${code}) before it was ready: ${out}`));
    });
  });
}

/** Starts a chatnode with `args`; resolves to { child, base } once it prints its address. */
export async function startNode(args) {
  const child = spawn(CHATNODE, ["--listen", "127.0.0.1:0", ...args], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  const match = await firstMatch(child, /listening on (http:\/\/[\d.:]+)/, "chatnode");
  return { child, base: match[1] };
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
  await firstMatch(child, /Ready to accept connections/, "redis-server");
  return { child, url: `redis://127.0.0.1:${port}` };
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
