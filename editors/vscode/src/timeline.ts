// A file's history: its changesets (dbcode/log filtered to the path) in VS Code's Timeline view,
// and the same list as the "dbcode: File History" quick pick. A click opens the file as it was
// right after that changeset (dbcode://WS@SEQ/PATH, read-only) beside the current file, as a
// diff.
//
// The Timeline API is proposed in VS Code 1.100 (package.json: enabledApiProposals). Desktop
// VS Code allows it only with `--enable-proposed-api lsp-dbcode.dbcode` (code-server 4.100.3
// allowed it without); where it is refused, the quick pick alone is offered.

import * as vscode from "vscode";
import { Connection, errorMessage, isPinned, SCHEME } from "./connection";

interface LogEntry {
  workspace: string;
  seq: number;
  agent: string;
  message: string | null;
  time: string;
  files: { path: string; revision: number; kind: string; oldPath?: string }[];
  meta: Record<string, unknown> | null;
}

/** Changesets per Timeline page (the server's dbcode/log allows up to LOG_LIMIT_MAX). */
const TIMELINE_PAGE_ITEMS = 50;

export function revisionUri(uri: vscode.Uri, seq: number): vscode.Uri {
  return uri.with({ authority: `${uri.authority}@${seq}` });
}

function pathOf(uri: vscode.Uri): string {
  return uri.path.replace(/^\/+/, "");
}

function summary(cs: LogEntry): string {
  return (cs.message ?? "").split("\n")[0] || `changeset ${cs.seq}`;
}

function tooltip(cs: LogEntry, path: string): vscode.MarkdownString {
  const md = new vscode.MarkdownString();
  md.appendMarkdown(`**#${cs.seq}** by **${cs.agent}**, ${new Date(cs.time).toLocaleString()}\n\n`);
  if (cs.message) {
    md.appendText(cs.message);
    md.appendMarkdown("\n\n");
  }
  const f = cs.files.find((x) => x.path === path || x.oldPath === path);
  if (f) {
    const from = f.oldPath ? `${f.oldPath} → ` : "";
    md.appendText(`${f.kind} ${from}${f.path} (revision ${f.revision})`);
    md.appendMarkdown("\n\n");
  }
  if (cs.meta && Object.keys(cs.meta).length) {
    md.appendCodeblock(JSON.stringify(cs.meta, null, 2), "json");
  }
  return md;
}

export class FileHistory implements vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<vscode.TimelineChangeEvent | undefined>();
  private readonly disposables: vscode.Disposable[] = [this.changed];
  /** Whether VS Code let us register the Timeline provider (the proposed API is enabled). */
  readonly timeline: boolean;

  constructor(private readonly conn: Connection) {
    type DidCommit = { workspace: string; files: { path: string; oldPath?: string }[] };
    conn.onNotification("dbcode/didCommit", (cs: DidCommit) => {
      for (const f of cs.files) {
        for (const p of [f.path, f.oldPath]) {
          if (p) {
            this.changed.fire({
              uri: vscode.Uri.from({ scheme: SCHEME, authority: cs.workspace, path: `/${p}` }),
            });
          }
        }
      }
    });
    this.disposables.push(
      vscode.commands.registerCommand("dbcode.openRevision", (uri: vscode.Uri, seq: number) =>
        this.openRevision(uri, seq),
      ),
      vscode.commands.registerCommand("dbcode.fileHistory", (uri?: vscode.Uri) =>
        this.pick(uri),
      ),
    );
    let registered = false;
    try {
      if (typeof vscode.workspace.registerTimelineProvider === "function") {
        this.disposables.push(
          vscode.workspace.registerTimelineProvider(SCHEME, {
            id: "dbcode",
            label: "dbcode",
            onDidChange: this.changed.event,
            provideTimeline: (uri, options, token) => this.provideTimeline(uri, options, token),
          }),
        );
        registered = true;
      }
    } catch (err) {
      conn.output.appendLine(
        "dbcode: the Timeline view is not available (start VS Code with " +
          '--enable-proposed-api lsp-dbcode.dbcode); use "dbcode: File History". ' +
          errorMessage(err),
      );
    }
    this.timeline = registered;
  }

  private async log(
    uri: vscode.Uri,
    beforeSeq?: number,
    limit = TIMELINE_PAGE_ITEMS,
  ): Promise<LogEntry[]> {
    return this.conn.request<LogEntry[]>("dbcode/log", {
      workspace: uri.authority,
      path: pathOf(uri),
      limit,
      ...(beforeSeq !== undefined ? { beforeSeq } : {}),
    });
  }

  private async provideTimeline(
    uri: vscode.Uri,
    options: vscode.TimelineOptions,
    _token: vscode.CancellationToken,
  ): Promise<vscode.Timeline> {
    if (uri.scheme !== SCHEME || isPinned(uri) || !pathOf(uri)) {
      return { items: [] };
    }
    const before = options.cursor ? Number(options.cursor) : undefined;
    const limit =
      typeof options.limit === "number"
        ? Math.min(options.limit, TIMELINE_PAGE_ITEMS)
        : TIMELINE_PAGE_ITEMS;
    let entries: LogEntry[];
    try {
      entries = await this.log(uri, before, limit);
    } catch (err) {
      this.conn.output.appendLine(`dbcode/log ${uri.toString()}: ${errorMessage(err)}`);
      return { items: [] };
    }
    const path = pathOf(uri);
    const items: vscode.TimelineItem[] = entries.map((cs) => ({
      id: `dbcode:${cs.workspace}:${cs.seq}`,
      timestamp: Date.parse(cs.time),
      label: summary(cs),
      description: `#${cs.seq} · ${cs.agent}`,
      iconPath: new vscode.ThemeIcon("git-commit"),
      tooltip: tooltip(cs, path),
      contextValue: "dbcode-changeset",
      command: {
        title: "Open this revision",
        command: "dbcode.openRevision",
        arguments: [uri, cs.seq],
      },
    }));
    const last = entries[entries.length - 1];
    return {
      items,
      paging: { cursor: entries.length === limit && last ? String(last.seq) : undefined },
    };
  }

  /** The file as it was after changeset `seq`, beside the current file. */
  async openRevision(uri: vscode.Uri, seq: number): Promise<void> {
    const path = pathOf(uri);
    const name = path.split("/").pop() ?? path;
    await vscode.commands.executeCommand(
      "vscode.diff",
      revisionUri(uri, seq),
      uri,
      `${name} (#${seq}) ↔ current`,
      { preview: true },
    );
  }

  private async pick(arg?: vscode.Uri): Promise<void> {
    const uri =
      arg instanceof vscode.Uri ? arg : vscode.window.activeTextEditor?.document.uri;
    if (!uri || uri.scheme !== SCHEME || isPinned(uri)) {
      void vscode.window.showInformationMessage(
        "dbcode: open a dbcode:// file to see its history.",
      );
      return;
    }
    let entries: LogEntry[];
    try {
      entries = await this.log(uri);
    } catch (err) {
      void vscode.window.showErrorMessage(`dbcode: cannot read the history: ${errorMessage(err)}`);
      return;
    }
    const picked = await vscode.window.showQuickPick(
      entries.map((cs) => ({
        label: summary(cs),
        description: `#${cs.seq} · ${cs.agent}`,
        detail:
          new Date(cs.time).toLocaleString() + (cs.meta ? ` · ${JSON.stringify(cs.meta)}` : ""),
        seq: cs.seq,
      })),
      {
        title: `dbcode: history of ${pathOf(uri)}`,
        placeHolder: "Open a revision beside the current file",
      },
    );
    if (picked) {
      await this.openRevision(uri, picked.seq);
    }
  }

  dispose(): void {
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}
