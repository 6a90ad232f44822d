// End-to-end driver for "dbcode: Set Token…" in a real VS Code.
// The protocol and the environment: harness.mjs.

import {
  BASE,
  EDITOR_LINES,
  FILE,
  STEP_MS,
  WS,
  command,
  drive,
  emit,
  explorerRow,
  statusText,
  viewText,
  waitFor,
} from "./harness.mjs";


const connected = (s) => s.includes("connected") && !s.includes("disconnected");

drive({ width: 1400, height: 900 }, async (page) => {
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
});
