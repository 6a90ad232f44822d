// End-to-end driver: a real VS Code (code-server) in headless Debian chromium, via playwright-core.
//
// Started by tests/editors/test_vscode.py, which runs code-server, seeds the database and checks
// it with the dbcode CLI. The two talk over lines:
//   this script -> stdout: `@@ {"event": NAME, ...}` when a step is done (or {"event": "error"})
//   test -> stdin: `{"cmd": NAME, ...}` to go on with the next step
// Anything else on stdout/stderr is a log for humans.
//
// Environment: DBCODE_E2E_URL (code-server base URL), DBCODE_E2E_WORKSPACE, DBCODE_E2E_FILE,
// DBCODE_E2E_SHOTS (screenshot dir), DBCODE_E2E_PROFILE (a fresh browser profile dir),
// CHROMIUM (default /usr/bin/chromium), DBCODE_E2E_DIAGNOSTIC_TIMEOUT_MS (default 20000).

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
const DIAG_MS = Number(env.DBCODE_E2E_DIAGNOSTIC_TIMEOUT_MS || 20000);
const STEP_MS = 90_000;

const t0 = Date.now();
const log = (...a) => console.error(`[run.mjs ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
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

/** The text of the active editor, read from the DOM (lines sorted by their position). */
async function editorText(page) {
  return page.evaluate(() => {
    const el = document.querySelector(".part.editor .editor-instance .monaco-editor .view-lines");
    if (!el) return null;
    const rows = [...el.querySelectorAll(":scope > .view-line")].map((l) => [
      parseFloat(l.style.top),
      (l.textContent ?? "").replace(/\u00a0/g, " "),
    ]);
    rows.sort((a, b) => a[0] - b[0]);
    return rows.map((r) => r[1]).join("\n");
  });
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
  return path;
}

const explorerRow = (page, name) =>
  page.locator(".explorer-folders-view .monaco-list-row", {
    has: page.locator(".label-name", { hasText: new RegExp(`^${name.replace(/[.]/g, "\\.")}$`) }),
  });

async function statusText(page) {
  const item = page.locator(".statusbar-item", { hasText: "dbcode:" }).first();
  return (await item.innerText({ timeout: 1000 }).catch(() => "")).trim();
}

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
      // Nothing but this machine: every other host name fails to resolve.
      "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ],
    viewport: { width: 1400, height: 860 },
  });
  // code-server's workbench asks an extension gallery; only 127.0.0.1 is ever reached.
  await ctx.route(
    (url) => !["127.0.0.1", "localhost", ""].includes(url.hostname),
    (route) => route.abort(),
  );
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on("pageerror", (err) => log("page error:", err.message));

    // 1. An empty window; "dbcode: Open Workspace…" lists the database's workspaces.
    await page.goto(`${BASE}/?ew=true`, { timeout: STEP_MS });
    await page.locator(".monaco-workbench").waitFor({ timeout: STEP_MS });
    await page.locator(".statusbar").waitFor({ timeout: STEP_MS });
    log("workbench up");
    // The palette lists the extension's command once the workbench has registered it: retry.
    await waitFor("the command dbcode: Open Workspace… in the palette", async () => {
      await page.keyboard.press("Escape");
      await page.keyboard.press("F1");
      await page.locator(".quick-input-widget input").waitFor({ timeout: 3000 });
      await page.keyboard.type("dbcode: Open Workspace");
      const item = page
        .locator(".quick-input-list .monaco-list-row", { hasText: "dbcode: Open Workspace" })
        .first();
      await item.waitFor({ timeout: 4000 });
      await item.click();
      return true;
    });
    // The database may hold many workspaces (other tests'): filter the list, as a user would.
    await page.locator(".quick-input-widget input").waitFor({ timeout: STEP_MS });
    await page.keyboard.type(WS);
    const pick = page
      .locator(".quick-input-list .monaco-list-row", { hasText: `dbcode://${WS}/` })
      .first();
    await pick.waitFor({ timeout: STEP_MS });
    const picks = await page.locator(".quick-input-list .monaco-list-row").allInnerTexts();
    await shot(page, "1-open-workspace");
    emit("picker", { items: picks });
    await pick.click();

    // 2. The window reopens with dbcode://WS/ as a folder; the Explorer shows the DB tree.
    await waitFor("the window to reopen on the folder", async () =>
      decodeURIComponent(page.url()).includes(`folder=dbcode://${WS}/`),
    );
    const top = FILE.split("/")[0];
    await explorerRow(page, top).waitFor({ timeout: STEP_MS });
    const explorer = await page.locator(".explorer-folders-view .monaco-list-row").allInnerTexts();
    const status = await waitFor("the status bar to say connected", async () => {
      const s = await statusText(page);
      return s.includes("connected") && !s.includes("disconnected") ? s : false;
    });
    emit("explorer", { url: page.url(), items: explorer, status });
    await command("open");

    // 3. Open the file from the Explorer.
    for (const [i, part] of FILE.split("/").entries()) {
      await explorerRow(page, part).first().click();
      if (i < FILE.split("/").length - 1) await page.waitForTimeout(300);
    }
    await page.locator(".part.editor .monaco-editor .view-lines").first().waitFor({ timeout: STEP_MS });
    const opened = await waitFor("the editor to show the file", async () => {
      const t = await editorText(page);
      return t && t.trim().length ? t : false;
    });
    await page.locator(".part.editor .monaco-editor .view-lines").first().click();
    await page.keyboard.press("Control+Home");
    emit("opened", { text: opened });

    // 4. A ruff diagnostic in the Problems panel.
    await page.keyboard.press("Control+Shift+M");
    await page.locator(".markers-panel").waitFor({ timeout: STEP_MS });
    let problems = [];
    try {
      problems = await waitFor(
        "a diagnostic in the Problems panel",
        async () => {
          const rows = await page.locator(".markers-panel .monaco-list-row").allInnerTexts();
          return rows.length ? rows : false;
        },
        DIAG_MS,
      );
      await page.waitForTimeout(500); // let the squiggle render
    } catch (err) {
      log(String(err));
    }
    await shot(page, "2-diagnostics");
    emit("diagnostics", { problems, waitedMs: DIAG_MS });
    const typed = await command("type");

    // 5. Type at the end, save with Ctrl+S.
    await page.locator(".part.editor .monaco-editor .view-lines").first().click();
    await page.keyboard.press("Control+End");
    await page.keyboard.type(typed.text, { delay: 15 });
    const beforeSave = await waitFor("the typed text", async () => {
      const t = await editorText(page);
      return t && t.includes(typed.marker) ? t : false;
    });
    await page.keyboard.press("Control+S");
    await waitFor("the editor tab to be saved", async () => {
      const dirty = await page.locator(".tabs-container .tab.dirty").count();
      return dirty === 0;
    });
    await shot(page, "3-saved");
    emit("saved", { text: beforeSave });

    // 6. Another agent commits: the open editor follows, without a reload (the page keeps a
    // marker that a reload would wipe).
    await page.evaluate(() => {
      window.__dbcodeNoReload = true;
    });
    const next = await command("expect");
    const updated = await waitFor(
      "the other agent's text in the editor",
      async () => {
        const t = await editorText(page);
        return t && t.includes(next.marker) ? t : false;
      },
      next.timeoutMs ?? 30000,
    );
    await page.waitForTimeout(300);
    const dirtyTabs = await page.locator(".tabs-container .tab.dirty").count();
    const reloaded = !(await page.evaluate(() => window.__dbcodeNoReload === true));
    await shot(page, "4-other-agent");
    emit("updated", { text: updated, dirtyTabs, reloaded });

    // 7. Files created and deleted by others appear and vanish in the Explorer.
    const created = await command("expectCreated");
    await explorerRow(page, created.name).first().waitFor({ timeout: 30000 });
    emit("created", { items: await page.locator(".explorer-folders-view .monaco-list-row").allInnerTexts() });
    const deleted = await command("expectDeleted");
    await explorerRow(page, deleted.name).first().waitFor({ state: "detached", timeout: 30000 });
    await shot(page, "5-explorer-follows");
    emit("deleted", { items: await page.locator(".explorer-folders-view .monaco-list-row").allInnerTexts() });

    // 8. Rename and delete from the Explorer (F2, Delete): each one changeset in the database.
    const ren = await command("rename");
    await explorerRow(page, ren.from).first().click();
    await page.keyboard.press("F2");
    const box = page.locator(".explorer-folders-view .monaco-inputbox input");
    await box.waitFor({ timeout: 10000 });
    await box.fill(ren.to);
    await page.keyboard.press("Enter");
    await explorerRow(page, ren.to).first().waitFor({ timeout: 30000 });
    await explorerRow(page, ren.from).first().waitFor({ state: "detached", timeout: 30000 });
    emit("renamed");
    const del = await command("delete");
    await explorerRow(page, del.name).first().click();
    await page.keyboard.press("Delete");
    const confirm = page.locator(".monaco-dialog-box .monaco-button", { hasText: /^Delete$/ });
    await confirm.waitFor({ timeout: 10000 });
    await confirm.click();
    await explorerRow(page, del.name).first().waitFor({ state: "detached", timeout: 30000 });
    emit("removed");
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
