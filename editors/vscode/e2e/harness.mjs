// What the end-to-end drivers (run.mjs, review.mjs, token.mjs) share: a real VS Code
// (code-server) in headless Debian chromium, via playwright-core, driven step by step by
// tests/editors/test_vscode.py. The protocol, over lines:
//   driver -> stdout: `@@ {"event": NAME, ...}` when a step is done (or {"event": "error"})
//   test -> stdin: `{"cmd": NAME, ...}` to go on with the next step
// Anything else on stdout/stderr is a log for humans. Everything asserted is what a user sees:
// the workbench's DOM text.
//
// Environment: DBCODE_E2E_URL (code-server base URL), DBCODE_E2E_WORKSPACE, DBCODE_E2E_FILE,
// DBCODE_E2E_SHOTS (screenshot dir), DBCODE_E2E_PROFILE (a fresh browser profile dir),
// DBCODE_E2E_FAILURE_SHOT (a screenshot of a failure), CHROMIUM (default /usr/bin/chromium).

import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { basename, join } from "node:path";
import { chromium } from "playwright-core";

export const env = process.env;
export const BASE = env.DBCODE_E2E_URL;
export const WS = env.DBCODE_E2E_WORKSPACE;
export const FILE = env.DBCODE_E2E_FILE;
const SHOTS = env.DBCODE_E2E_SHOTS;
const PROFILE = env.DBCODE_E2E_PROFILE;
const CHROMIUM = env.CHROMIUM || "/usr/bin/chromium";
export const STEP_MS = 90_000;

const NAME = basename(process.argv[1] ?? "e2e");
const t0 = Date.now();
export const log = (...a) =>
  console.error(`[${NAME} ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
export const emit = (event, data = {}) => console.log(`@@ ${JSON.stringify({ event, ...data })}`);

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** The test's next command, whichever it is (`what`: for the error if stdin closes). */
export async function nextCommand(what = "a command") {
  const { value, done } = await lines.next();
  if (done) {
    throw new Error(`the test closed stdin while ${what} was expected`);
  }
  return JSON.parse(value);
}

/** The test's next command, which must be `expected`. */
export async function command(expected) {
  const msg = await nextCommand(expected);
  if (msg.cmd !== expected) {
    throw new Error(`expected command ${expected}, got ${JSON.stringify(msg)}`);
  }
  return msg;
}

export async function waitFor(what, fn, timeout = STEP_MS, interval = 250) {
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

export async function shot(page, name) {
  const path = join(SHOTS, `vscode-${name}.png`);
  await page.screenshot({ path });
  log("screenshot", path);
  return path;
}

/** Lines of a Monaco editor's view (sorted by their position). */
export async function viewText(page, selector) {
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

export const EDITOR_LINES = ".part.editor .editor-instance .monaco-editor .view-lines";

/** The text of the active editor, read from the DOM. */
export const editorText = (page) => viewText(page, EDITOR_LINES);

export const explorerRow = (page, name) =>
  page.locator(".explorer-folders-view .monaco-list-row", {
    has: page.locator(".label-name", { hasText: new RegExp(`^${name.replace(/[.]/g, "\\.")}$`) }),
  });

/** The text of the first status bar item that contains `text`. */
export async function statusText(page, text = "dbcode:") {
  const item = page.locator(".statusbar-item", { hasText: text }).first();
  return (await item.innerText({ timeout: 1000 }).catch(() => "")).trim();
}

/** Launch chromium on a fresh profile, run `steps(page)`, then tell the test how it ended
 * (`done`, or `error` with a failure screenshot) and exit. */
export function drive(viewport, steps) {
  const run = async () => {
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
        // Nothing but this machine: every other host name fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
      ],
      viewport,
    });
    // code-server's workbench asks an extension gallery; only 127.0.0.1 is ever reached.
    await ctx.route(
      (url) => !["127.0.0.1", "localhost", ""].includes(url.hostname),
      (route) => route.abort(),
    );
    try {
      const page = ctx.pages()[0] ?? (await ctx.newPage());
      page.on("pageerror", (err) => log("page error:", err.message));
      await steps(page);
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
  };
  run().then(
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
}
