// End-to-end driver for files in a real VS Code: open a workspace, a diagnostic, type and save,
// another agent's change, the Explorer following creates, renames and deletes.
// The protocol and the environment: harness.mjs; also DBCODE_E2E_DIAGNOSTIC_TIMEOUT_MS
// (default 20000).

import {
  BASE,
  FILE,
  STEP_MS,
  WS,
  command,
  drive,
  editorText,
  emit,
  env,
  explorerRow,
  log,
  shot,
  statusText,
  waitFor,
} from "./harness.mjs";

const DIAG_MS = Number(env.DBCODE_E2E_DIAGNOSTIC_TIMEOUT_MS || 20000);

drive({ width: 1400, height: 860 }, async (page) => {
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
});
