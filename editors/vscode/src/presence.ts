// Presence in the status bar (SPEC: Coordination): who else has the active dbcode:// file open,
// in which mode, since when. Read with dbcode/presence when the active editor changes and
// whenever the workspace's presence changes (dbcode/didChangePresence); a click lists them.

import * as vscode from "vscode";
import { Connection, errorMessage, isPinned, SCHEME } from "./connection";

interface PresenceJson {
  agent: string;
  path: string;
  uri: string;
  mode: string;
  since: string;
}

function ago(since: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(since)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

export class PresenceStatus implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private others: PresenceJson[] = [];
  private current: vscode.Uri | undefined;
  private generation = 0;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly conn: Connection) {
    this.item = vscode.window.createStatusBarItem(
      "dbcode.presence",
      vscode.StatusBarAlignment.Left,
      -1,
    );
    this.item.name = "dbcode presence";
    this.item.command = "dbcode.showPresence";
    conn.onNotification("dbcode/didChangePresence", (p: { workspace: string }) => {
      if (this.current && this.current.authority === p.workspace) {
        void this.refresh();
      }
    });
    this.disposables.push(
      this.item,
      vscode.window.onDidChangeActiveTextEditor(() => void this.refresh()),
      conn.onDidRestart(() => void this.refresh()),
      vscode.commands.registerCommand("dbcode.showPresence", () => this.show()),
    );
    void this.refresh();
  }

  private activeUri(): vscode.Uri | undefined {
    const uri = vscode.window.activeTextEditor?.document.uri;
    return uri && uri.scheme === SCHEME && !isPinned(uri) ? uri : undefined;
  }

  async refresh(): Promise<void> {
    const uri = this.activeUri();
    const gen = ++this.generation;
    this.current = uri;
    if (!uri) {
      this.others = [];
      this.item.hide();
      return;
    }
    let rows: PresenceJson[];
    try {
      rows = await this.conn.request<PresenceJson[]>("dbcode/presence", {
        workspace: uri.authority,
        path: uri.path.replace(/^\/+/, ""),
      });
    } catch (err) {
      this.conn.output.appendLine(`dbcode/presence: ${errorMessage(err)}`);
      return;
    }
    this.conn.output.debug(`dbcode/presence ${uri.toString()}: ${rows.length} row(s)`);
    if (gen !== this.generation) {
      return; // the active editor changed meanwhile
    }
    const me = this.conn.currentAgent;
    const byAgent = new Map<string, PresenceJson>();
    for (const r of rows) {
      if (r.agent === me) continue;
      const seen = byAgent.get(r.agent);
      if (!seen || r.since < seen.since) byAgent.set(r.agent, r);
    }
    this.others = [...byAgent.values()].sort((a, b) => (a.since < b.since ? -1 : 1));
    this.render();
  }

  private render(): void {
    const others = this.others;
    if (!others.length) {
      this.item.text = "$(person) only you here";
      this.item.tooltip = "dbcode: no other agent has this file open.";
    } else {
      const names = others.map((o) => o.agent);
      this.item.text =
        names.length <= 2
          ? `$(people) also here: ${names.join(", ")}`
          : `$(people) also here: ${names[0]} and ${names.length - 1} others`;
      this.item.tooltip = new vscode.MarkdownString(
        "**dbcode: also editing this file**\n\n" +
          others.map((o) => `- ${o.agent} · ${o.mode} mode · since ${ago(o.since)}`).join("\n"),
      );
    }
    this.item.show();
  }

  private async show(): Promise<void> {
    await this.refresh();
    if (!this.current) {
      void vscode.window.showInformationMessage(
        "dbcode: open a dbcode:// file to see who else has it open.",
      );
      return;
    }
    const items: vscode.QuickPickItem[] = this.others.length
      ? this.others.map((o) => ({
          label: `$(person) ${o.agent}`,
          description: `${o.mode} mode`,
          detail: `since ${new Date(o.since).toLocaleString()} (${ago(o.since)})`,
        }))
      : [{ label: "No other agent has this file open" }];
    await vscode.window.showQuickPick(items, {
      title: `dbcode: who has ${this.current.path.replace(/^\/+/, "")} open`,
    });
  }

  dispose(): void {
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}
