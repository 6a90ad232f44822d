// End-to-end driver for "dbcode: Set Token…" in a real VS Code (code-server + headless Debian
// chromium via playwright-core). Same protocol as run.mjs:
//   this script -> stdout: `@@ {"event": NAME, ...}` when a step is done (or {"event": "error"})
//   test -> stdin: `{"cmd": NAME, ...}` to go on with the next step
// Everything asserted is what a user sees: the workbench's DOM text.
//
// Environment: DBCODE_E2E_URL, DBCODE_E2E_WORKSPACE, DBCODE_E2E_FILE, DBCODE_E2E_SHOTS,
// DBCODE_E2E_PROFILE, CHROMIUM, DBCODE_E2E_FAILURE_SHOT.

import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = process.env;
const BASE = env.DBCODE_E2E_URL;
const WS = env.DBCODE_E2E_WORKSPACE;
const FILE = env.DBCODE_E2E_FILE;
const SHOTS = env.DBCODE_E2E_SHOTS;
const PROFILE = env.DBCODE_E2E_PROFILE;
const CHROMIUM = env.CHROMIUM || "/usr/bin/chromium";
const STEP_MS = 90_000;

const t0 = Date.now();
const log = (...a) => console.error(`[token.mjs ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const emit = (event, data = {}) => console.log(`@@ ${JSON.stringify({ event, ...data })}`);

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function command(expected) {
  const { value, done } = await lines.next();
  if (done) {
    throw new Error(`the test closed stdin while ${expected} was expected`);
  }
  const msg = JSON.parse(value);
  if (msg.cmd !== expected) {
    throw new Error(`expected command ${expected}, got ${value}`);
  }
  return msg;
}

async function waitFor(what, fn, timeout = STEP_MS, interval = 250) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeout / 1000}s waiting for ${what} (last: ${last})`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

async function shot(page, name) {
  const path = join(SHOTS, `vscode-${name}.png`);
  await page.screenshot({ path });
  log("screenshot", path);
}

/** Lines of a Monaco editor's view (sorted by their position). */
async function viewText(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el) return null;
    const rows = [...el.querySelectorAll(":scope > .view-line")].map((l) => [
      parseFloat(l.style.top),
      (l.textContent ?? "").replace(/\u00a0/g, " "),
    ]);
    rows.sort((a, b) => a[0] - b[0]);
    return rows.map((r) => r[1]).join("\n");
  }, selector);
}

const EDITOR_LINES = ".part.editor .editor-instance .monaco-editor .view-lines";

const explorerRow = (page, name) =>
  page.locator(".explorer-folders-view .monaco-list-row", {
    has: page.locator(".label-name", { hasText: new RegExp(`^${name.replace(/[.]/g, "\\.")}$`) }),
  });

async function statusText(page) {
  const item = page.locator(".statusbar-item", { hasText: "dbcode:" }).first();
  return (await item.innerText({ timeout: 1000 }).catch(() => "")).trim();
}

const connected = (s) => s.includes("connected") && !s.includes("disconnected");

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const ctx = await chromium.launchPersistentContext(PROFILE, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ],
    viewport: { width: 1400, height: 900 },
  });
  await ctx.route(
    (url) => !["127.0.0.1", "localhost", ""].includes(url.hostname),
    (route) => route.abort(),
  );
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on("pageerror", (err) => log("page error:", err.message));

    // 1. The workspace as the window's folder, a file open: the server is connected.
    await page.goto(`${BASE}/?folder=${encodeURIComponent(`dbcode://${WS}/`)}`, { timeout: STEP_MS });
    await page.locator(".monaco-workbench").waitFor({ timeout: STEP_MS });
    await explorerRow(page, FILE).first().waitFor({ timeout: STEP_MS });
    await explorerRow(page, FILE).first().click();
    await waitFor("the editor to show the file", async () => {
      const t = await viewText(page, EDITOR_LINES);
      return t && t.trim().length ? t : false;
    });
    const status = await waitFor("the status bar to say connected", async () => {
      const s = await statusText(page);
      return connected(s) ? s : false;
    });
    emit("connected", { status });

    // 2. "dbcode: Set Token…" from the command palette: a password box.
    const { token } = await command("setToken");
    await waitFor("the command dbcode: Set Token… in the palette", async () => {
      await page.keyboard.press("Escape");
      await page.keyboard.press("F1");
      await page.locator(".quick-input-widget input").waitFor({ timeout: 3000 });
      await page.keyboard.type("dbcode: Set Token");
      const item = page
        .locator(".quick-input-list .monaco-list-row", { hasText: "dbcode: Set Token" })
        .first();
      await item.waitFor({ timeout: 4000 });
      await item.click();
      return true;
    });
    const box = page.locator('.quick-input-widget input[type="password"]');
    await box.waitFor({ timeout: STEP_MS });
    await box.fill(token);
    await page.keyboard.press("Enter");
    await box.waitFor({ state: "hidden", timeout: STEP_MS });
    emit("entered");

    // 3. The server session started again, with the token.
    await command("status");
    const after = await waitFor("the status bar to say connected again", async () => {
      const s = await statusText(page);
      return connected(s) ? s : false;
    });
    emit("reconnected", { status: after });
    await command("finish");
  } catch (err) {
    const page = ctx.pages()[0];
    if (page && env.DBCODE_E2E_FAILURE_SHOT) {
      await page.screenshot({ path: env.DBCODE_E2E_FAILURE_SHOT }).catch(() => undefined);
      log("failure screenshot", env.DBCODE_E2E_FAILURE_SHOT);
    }
    throw err;
  } finally {
    await ctx.close().catch(() => undefined);
  }
}

main().then(
  () => {
    emit("done");
    process.exit(0);
  },
  (err) => {
    log("FAILED:", err?.stack ?? String(err));
    emit("error", { message: String(err?.message ?? err) });
    process.exit(1);
  },
);
