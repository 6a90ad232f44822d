// Review threads in VS Code's own Comments API (SPEC: Review).
//
// One CommentController for the dbcode scheme. The threads of every open dbcode:// document
// come from dbcode/comments (all states: resolved ones stay, collapsed, so they can be
// reopened) at their current ranges, and are read again when the workspace's review feed
// (dbcode/didComment), a changeset (dbcode/didCommit: anchors move with the code) or the
// document's review diagnostics change. Replies go to dbcode/reply, Resolve / Reopen to
// dbcode/resolve, a new thread on a selection to dbcode/comment.

import * as vscode from "vscode";
import { Connection, errorMessage, isPinned, SCHEME } from "./connection";

export type ThreadKind = "note" | "suggestion" | "blocking";

interface ThreadJson {
  thread: number;
  uri: string;
  path: string;
  range: { start: Pos; end: Pos } | null;
  revision: number;
  kind: ThreadKind;
  state: "open" | "resolved";
  outdated: boolean;
  replacement: string | null;
  comments: { id: number; agent: string; text: string; time: string }[];
}

interface Pos {
  line: number;
  character: number;
}

/** Wait this long after a burst of events before reading a document's threads again. */
const REFRESH_DEBOUNCE_MS = 150;

const KIND_LABEL: Record<ThreadKind, string> = {
  note: "Note",
  suggestion: "Suggestion",
  blocking: "Blocking",
};

interface Tracked {
  workspace: string;
  id: number;
}

function workspacePath(uri: vscode.Uri): { workspace: string; path: string } {
  return { workspace: uri.authority, path: uri.path.replace(/^\/+/, "") };
}

function toRange(r: { start: Pos; end: Pos } | null): vscode.Range {
  if (!r) {
    return new vscode.Range(0, 0, 0, 0);
  }
  return new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);
}

function lspRange(r: vscode.Range): { start: Pos; end: Pos } {
  return {
    start: { line: r.start.line, character: r.start.character },
    end: { line: r.end.line, character: r.end.character },
  };
}

/** The document's review diagnostics (source "review"), as a string to compare. */
function reviewSignature(uri: vscode.Uri): string {
  return vscode.languages
    .getDiagnostics(uri)
    .filter((d) => d.source === "review")
    .map((d) => {
      const r = d.range;
      return `${r.start.line}:${r.start.character}-${r.end.line}:${r.end.character} ${d.message}`;
    })
    .join("\n");
}

export class ReviewController implements vscode.Disposable {
  private readonly controller: vscode.CommentController;
  /** document uri -> thread id -> its widget. */
  private readonly threads = new Map<string, Map<number, vscode.CommentThread>>();
  private readonly ids = new WeakMap<vscode.CommentThread, Tracked>();
  private readonly timers = new Map<string, ReturnType<typeof setTimeout>>();
  /** document uri -> its review diagnostics as last seen (see reviewSignature). */
  private readonly reviewDiagnostics = new Map<string, string>();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly conn: Connection) {
    this.controller = vscode.comments.createCommentController("dbcode.review", "dbcode review");
    this.controller.options = {
      prompt: "Reply…",
      placeHolder: "A comment for the other agents (Markdown)",
    };
    this.controller.commentingRangeProvider = {
      provideCommentingRanges: (doc) =>
        doc.uri.scheme === SCHEME && !isPinned(doc.uri)
          ? [new vscode.Range(0, 0, Math.max(doc.lineCount - 1, 0), 0)]
          : [],
    };
    conn.onNotification("dbcode/didComment", (p: { workspace: string }) =>
      this.refreshWorkspace(p.workspace),
    );
    conn.onNotification("dbcode/didCommit", (p: { workspace: string; files: { path: string }[] }) =>
      this.refreshWorkspace(p.workspace, new Set(p.files.map((f) => f.path))),
    );
    this.disposables.push(
      this.controller,
      conn.onDidRestart(() => this.refreshAll()),
      vscode.workspace.onDidOpenTextDocument((doc) => this.schedule(doc.uri)),
      vscode.workspace.onDidCloseTextDocument((doc) => this.forget(doc.uri)),
      vscode.languages.onDidChangeDiagnostics((e) => {
        // Review diagnostics move as the server re-anchors threads: follow them (only when
        // they changed; ruff's, published on every edit, do not matter here).
        for (const uri of e.uris) {
          const key = uri.toString();
          if (!this.threads.has(key)) {
            continue;
          }
          const now = reviewSignature(uri);
          if (this.reviewDiagnostics.get(key) !== now) {
            this.reviewDiagnostics.set(key, now);
            this.schedule(uri);
          }
        }
      }),
      vscode.commands.registerCommand("dbcode.review.reply", (r: vscode.CommentReply) =>
        this.reply(r),
      ),
      vscode.commands.registerCommand("dbcode.review.createNote", (r: vscode.CommentReply) =>
        this.create(r, "note"),
      ),
      vscode.commands.registerCommand("dbcode.review.createBlocking", (r: vscode.CommentReply) =>
        this.create(r, "blocking"),
      ),
      vscode.commands.registerCommand("dbcode.review.createSuggestion", (r: vscode.CommentReply) =>
        this.create(r, "suggestion"),
      ),
      vscode.commands.registerCommand("dbcode.review.resolve", (t: vscode.CommentThread) =>
        this.resolve(t, true),
      ),
      vscode.commands.registerCommand("dbcode.review.reopen", (t: vscode.CommentThread) =>
        this.resolve(t, false),
      ),
      vscode.commands.registerCommand("dbcode.review.refresh", () => this.refreshAll()),
    );
    this.refreshAll();
  }

  private refreshAll(): void {
    for (const doc of vscode.workspace.textDocuments) {
      this.schedule(doc.uri);
    }
  }

  private refreshWorkspace(workspace: string, paths?: Set<string>): void {
    for (const doc of vscode.workspace.textDocuments) {
      const uri = doc.uri;
      if (uri.scheme !== SCHEME || isPinned(uri) || uri.authority !== workspace) {
        continue;
      }
      if (!paths || paths.has(workspacePath(uri).path)) {
        this.schedule(uri);
      }
    }
  }

  private schedule(uri: vscode.Uri): void {
    if (uri.scheme !== SCHEME || isPinned(uri) || !workspacePath(uri).path) {
      return;
    }
    const key = uri.toString();
    const old = this.timers.get(key);
    if (old) {
      clearTimeout(old);
    }
    this.timers.set(
      key,
      setTimeout(() => {
        this.timers.delete(key);
        void this.refresh(uri);
      }, REFRESH_DEBOUNCE_MS),
    );
  }

  /** Read the document's threads and bring its widgets in line (added, changed, removed). */
  private async refresh(uri: vscode.Uri): Promise<void> {
    const key = uri.toString();
    const { workspace, path } = workspacePath(uri);
    let list: ThreadJson[];
    try {
      list = await this.conn.request<ThreadJson[]>("dbcode/comments", {
        workspace,
        path,
        state: "all",
      });
    } catch (err) {
      this.conn.output.appendLine(`dbcode/comments ${key}: ${errorMessage(err)}`);
      return;
    }
    if (!vscode.workspace.textDocuments.some((d) => d.uri.toString() === key)) {
      return; // closed meanwhile
    }
    let known = this.threads.get(key);
    if (!known) {
      known = new Map();
      this.threads.set(key, known);
    }
    const seen = new Set<number>();
    for (const t of list) {
      if (t.path !== path) {
        continue;
      }
      seen.add(t.thread);
      let widget = known.get(t.thread);
      const range = toRange(t.range);
      if (!widget) {
        widget = this.controller.createCommentThread(uri, range, []);
        widget.collapsibleState =
          t.state === "open"
            ? vscode.CommentThreadCollapsibleState.Expanded
            : vscode.CommentThreadCollapsibleState.Collapsed;
        known.set(t.thread, widget);
        this.ids.set(widget, { workspace, id: t.thread });
      } else if (!widget.range || !widget.range.isEqual(range)) {
        widget.range = range;
      }
      this.fill(widget, t);
    }
    for (const [id, widget] of known) {
      if (!seen.has(id)) {
        widget.dispose();
        known.delete(id);
      }
    }
  }

  private fill(widget: vscode.CommentThread, t: ThreadJson): void {
    const open = t.state === "open";
    const label =
      `${KIND_LABEL[t.kind] ?? t.kind} · thread ${t.thread}` +
      (open ? "" : " · resolved") +
      (t.outdated ? " · outdated" : "");
    if (widget.label !== label) {
      widget.label = label;
    }
    widget.contextValue = open ? "dbcode-open" : "dbcode-resolved";
    widget.state = open
      ? vscode.CommentThreadState.Unresolved
      : vscode.CommentThreadState.Resolved;
    widget.canReply = true;
    widget.comments = t.comments.map((c, i) => {
      let body = c.text;
      if (i === 0 && t.kind === "suggestion" && t.replacement !== null) {
        body += `\n\nSuggested replacement:\n\n\`\`\`\n${t.replacement}\n\`\`\``;
      }
      const md = new vscode.MarkdownString(body);
      return {
        body: md,
        mode: vscode.CommentMode.Preview,
        author: { name: c.agent },
        label: i === 0 ? KIND_LABEL[t.kind] : undefined,
        timestamp: new Date(c.time),
        contextValue: `dbcode-comment-${c.id}`,
      };
    });
  }

  private forget(uri: vscode.Uri): void {
    const key = uri.toString();
    const known = this.threads.get(key);
    if (!known) {
      return;
    }
    for (const widget of known.values()) {
      widget.dispose();
    }
    this.threads.delete(key);
    this.reviewDiagnostics.delete(key);
  }

  private async reply(r: vscode.CommentReply): Promise<void> {
    const tracked = this.ids.get(r.thread);
    if (!tracked) {
      return this.create(r, "note"); // a new thread's first comment
    }
    const text = r.text.trim();
    if (!text) {
      return;
    }
    try {
      await this.conn.request("dbcode/reply", {
        workspace: tracked.workspace,
        thread: tracked.id,
        text,
      });
    } catch (err) {
      void vscode.window.showErrorMessage(`dbcode: reply failed: ${errorMessage(err)}`);
      return;
    }
    await this.refresh(r.thread.uri);
  }

  private async create(r: vscode.CommentReply, kind: ThreadKind): Promise<void> {
    const thread = r.thread;
    if (this.ids.get(thread)) {
      return this.reply(r);
    }
    const text = r.text.trim();
    if (!text) {
      return;
    }
    const range = thread.range ?? new vscode.Range(0, 0, 0, 0);
    const params: Record<string, unknown> = {
      uri: thread.uri.toString(),
      range: lspRange(range),
      text,
      kind,
    };
    if (kind === "suggestion") {
      const doc = vscode.workspace.textDocuments.find(
        (d) => d.uri.toString() === thread.uri.toString(),
      );
      const replacement = await vscode.window.showInputBox({
        title: "dbcode: Suggested replacement for the selected text",
        value: doc?.getText(range) ?? "",
      });
      if (replacement === undefined) {
        return;
      }
      params.replacement = replacement;
    }
    try {
      await this.conn.request("dbcode/comment", params);
    } catch (err) {
      void vscode.window.showErrorMessage(`dbcode: comment failed: ${errorMessage(err)}`);
      return;
    }
    thread.dispose(); // the draft: the stored thread replaces it
    await this.refresh(thread.uri);
  }

  private async resolve(thread: vscode.CommentThread, resolved: boolean): Promise<void> {
    const tracked = this.ids.get(thread);
    if (!tracked) {
      return;
    }
    try {
      await this.conn.request("dbcode/resolve", {
        workspace: tracked.workspace,
        thread: tracked.id,
        resolved,
      });
    } catch (err) {
      void vscode.window.showErrorMessage(
        `dbcode: ${resolved ? "resolve" : "reopen"} failed: ${errorMessage(err)}`,
      );
      return;
    }
    await this.refresh(thread.uri);
  }

  dispose(): void {
    for (const t of this.timers.values()) {
      clearTimeout(t);
    }
    for (const known of this.threads.values()) {
      for (const widget of known.values()) {
        widget.dispose();
      }
    }
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}
