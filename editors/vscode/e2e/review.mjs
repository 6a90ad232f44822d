// End-to-end driver for review threads, presence and file history in a real VS Code.
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
  log,
  nextCommand,
  shot,
  statusText,
  viewText,
  waitFor,
} from "./harness.mjs";

/** The comment thread widget (in the editor) whose text contains `marker`. */
const threadWidget = (page, marker) => page.locator(".review-widget", { hasText: marker }).first();

async function widgetText(page, marker) {
  return (await threadWidget(page, marker).innerText({ timeout: 1000 }).catch(() => "")).trim();
}

// Tall: thread widgets push lines down.
drive({ width: 1400, height: 1600 }, async (page) => {
  // 1. The workspace as the window's folder; open the file from the Explorer.
  await page.goto(`${BASE}/?folder=${encodeURIComponent(`dbcode://${WS}/`)}`, { timeout: STEP_MS });
  await page.locator(".monaco-workbench").waitFor({ timeout: STEP_MS });
  await explorerRow(page, FILE).first().waitFor({ timeout: STEP_MS });
  await explorerRow(page, FILE).first().click();
  await waitFor("the editor to show the file", async () => {
    const t = await viewText(page, EDITOR_LINES);
    return t && t.trim().length ? t : false;
  });
  log("file open");

  // 2. The other agent's thread, in the editor's comment widget.
  const first = await command("expectThread");
  const thread = await waitFor("the thread's comment widget", async () => {
    const t = await widgetText(page, first.marker);
    return t || false;
  });
  await shot(page, "6-review-thread");
  emit("thread", { text: thread });

  // 3. Reply from the widget: "Reply…" opens the form, the Reply button sends it.
  const reply = await command("reply");
  const widget = threadWidget(page, first.marker);
  const replyButton = widget.locator(".review-thread-reply-button");
  if (await replyButton.isVisible().catch(() => false)) {
    await replyButton.click();
  }
  await widget.locator(".comment-form .monaco-editor").first().click();
  await page.keyboard.type(reply.text, { delay: 10 });
  await widget.locator(".monaco-button", { hasText: /^Reply$/ }).first().click();
  const replied = await waitFor("the reply in the widget", async () => {
    const t = await widgetText(page, first.marker);
    return t.includes(reply.text) ? t : false;
  });
  emit("replied", { text: replied });

  // 4. Others' replies and threads arrive live.
  for (;;) {
    const msg = await nextCommand();
    if (msg.cmd === "resolve") {
      // 5. Resolve from the widget's title bar.
      const w = threadWidget(page, msg.marker);
      await w.hover();
      await w.locator('.head .action-label[aria-label^="Resolve Thread"]').first().click();
      // VS Code collapses a thread once it is resolved (comments.collapseOnResolve).
      await waitFor("the resolved thread's widget to collapse", async () =>
        !(await threadWidget(page, msg.marker).isVisible().catch(() => false)),
      );
      const row = page.locator(".comments-panel .monaco-list-row", { hasText: msg.marker }).first();
      const resolved = await waitFor("the thread in the Comments panel", async () => {
        const label = (await row.getAttribute("aria-label", { timeout: 1000 })) ?? "";
        return label || false;
      }, 20_000).catch(() => "");
      await shot(page, "7-review-resolved");
      emit("resolved", { text: resolved });

      // Reopen: the Comments panel shows the thread again, ↺ in its title reopens it.
      await command("reopen");
      await row.click();
      const again = threadWidget(page, msg.marker);
      await waitFor("the resolved thread's widget", async () =>
        (await widgetText(page, msg.marker)).includes("· resolved"),
      );
      await again.hover();
      await again.locator('.head .action-label[aria-label^="Reopen Thread"]').first().click();
      const reopened = await waitFor("the thread to show open again", async () => {
        const t = await widgetText(page, msg.marker);
        return t && !t.includes("· resolved") ? t : false;
      });
      emit("reopened", { text: reopened });
      break;
    }
    if (msg.cmd !== "expectText") throw new Error(`unexpected command ${next.value}`);
    const text = await waitFor(`"${msg.text}" in a comment widget`, async () => {
      const t = await widgetText(page, msg.text);
      return t || false;
    }, 60_000);
    emit("live", { text });
  }

  // Anchors follow the code: the Comments panel shows where each thread is now.
  for (;;) {
    const msg = await command("expectPanel");
    const row = page.locator(".comments-panel .monaco-list-row", { hasText: msg.marker }).first();
    const text = await waitFor(`"${msg.text}" on the thread in the Comments panel`, async () => {
      const t = (await row.innerText({ timeout: 1000 }).catch(() => "")).trim();
      return t.includes(msg.text) ? t : false;
    }, 60_000);
    emit("panel", { text });
    if (msg.last) break;
  }

  // A new thread on a selection: "Add Comment on Current Selection", then "Add Note".
  const fresh = await command("newThread");
  await page.locator(EDITOR_LINES).first().click();
  await page.keyboard.press("Control+g");
  await page.locator(".quick-input-widget input").waitFor({ timeout: STEP_MS });
  await page.keyboard.type(String(fresh.line));
  await page.keyboard.press("Enter");
  await page.keyboard.press("Home");
  await page.keyboard.press("Shift+End");
  await waitFor("the command Add Comment on Current Selection", async () => {
    await page.keyboard.press("F1");
    await page.locator(".quick-input-widget input").waitFor({ timeout: 3000 });
    await page.keyboard.type("Add Comment on Current Selection");
    const item = page
      .locator(".quick-input-list .monaco-list-row", { hasText: "Add Comment on Current Selection" })
      .first();
    await item.waitFor({ timeout: 4000 });
    await item.click();
    return true;
  });
  const draft = page.locator(".review-widget", {
    has: page.locator(".monaco-button", { hasText: /^Add Note$/ }),
  });
  await draft.first().waitFor({ timeout: STEP_MS });
  await draft.first().locator(".comment-form .monaco-editor").first().click();
  await page.keyboard.type(fresh.text, { delay: 10 });
  await draft.first().locator(".monaco-button", { hasText: /^Add Note$/ }).first().click();
  const created = await waitFor("the new thread in a widget", async () => {
    const t = await widgetText(page, fresh.text);
    return t.includes("Note · thread") ? t : false;
  });
  await shot(page, "7b-review-new-thread");
  emit("created", { text: created });

  // 6. Presence: a second session opens the file; the status bar names it, a click lists it.
  const who = await command("expectPresence");
  const status = await waitFor(`${who.agent} in the status bar`, async () => {
    const s = await statusText(page, "also here");
    return s.includes(who.agent) ? s : false;
  }, 60_000);
  await shot(page, "8-presence");
  await page.locator(".statusbar-item", { hasText: "also here" }).first().click();
  await page.locator(".quick-input-list .monaco-list-row").first().waitFor({ timeout: STEP_MS });
  const listed = await waitFor("the presence list", async () => {
    const rows = await page.locator(".quick-input-list .monaco-list-row").allInnerTexts();
    return rows.some((r) => r.includes(who.agent)) ? rows : false;
  });
  const listTitle = (await page.locator(".quick-input-title").innerText().catch(() => "")).trim();
  await page.keyboard.press("Escape");
  emit("presence", { status, items: listed, title: listTitle });
  await command("expectAlone");
  const alone = await waitFor("the status bar to say nobody else is here", async () => {
    const s = await statusText(page, "only you here");
    return s || false;
  }, 60_000);
  emit("alone", { status: alone });

  // 7. The Timeline view (Explorer) lists the file's changesets.
  await command("timeline");
  const header = page.locator(".pane-header", { hasText: /^Timeline/ }).first();
  await header.waitFor({ timeout: STEP_MS });
  if ((await header.getAttribute("aria-expanded")) !== "true") {
    await header.click();
  }
  const rowsSel = ".timeline-tree-view .monaco-list-row";
  const want = await command("expectTimeline");
  const items = await waitFor("the file's changesets in the Timeline", async () => {
    const rows = await page.locator(rowsSel).allInnerTexts();
    return rows.some((r) => r.includes(want.text)) ? rows : false;
  });
  await shot(page, "9-timeline");
  emit("timeline", { items });

  // 8. A click opens that revision beside the current file, as a diff.
  const open = await command("openRevision");
  await page.locator(rowsSel, { hasText: open.text }).first().click();
  const diff = await waitFor("the diff editor", async () => {
    const original = await viewText(page, ".monaco-diff-editor .editor.original .view-lines");
    const modified = await viewText(page, ".monaco-diff-editor .editor.modified .view-lines");
    return original && modified ? { original, modified } : false;
  });
  // Thread widgets push lines out of view: fold them away ("Collapse All Comments").
  await waitFor("the command Collapse All Comments", async () => {
    await page.keyboard.press("Escape");
    await page.keyboard.press("F1");
    await page.locator(".quick-input-widget input").waitFor({ timeout: 3000 });
    await page.keyboard.type("Collapse All Comments");
    const item = page
      .locator(".quick-input-list .monaco-list-row", { hasText: "Collapse All Comments" })
      .first();
    await item.waitFor({ timeout: 4000 });
    await item.click();
    return true;
  });
  await waitFor("the thread widgets to fold", async () =>
    !(await page.locator(".monaco-diff-editor .review-widget").first().isVisible().catch(() => false)),
  );
  await page.waitForTimeout(500); // let both sides render fully
  const final = {
    original: await viewText(page, ".monaco-diff-editor .editor.original .view-lines"),
    modified: await viewText(page, ".monaco-diff-editor .editor.modified .view-lines"),
  };
  const tab = (await page.locator(".tabs-container .tab.active").innerText().catch(() => "")).trim();
  await page.waitForTimeout(1500); // errors of requests on the old revision would show by now
  const toasts = await page.locator(".notifications-toasts .notification-toast").allInnerTexts();
  await shot(page, "10-timeline-diff");
  emit("diff", { ...(final.original ? final : diff), tab, toasts });
  await command("finish");
});
