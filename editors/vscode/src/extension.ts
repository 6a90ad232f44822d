// dbcode for VS Code: files stored in PostgreSQL by lsp-dbcode, edited with no checkout.
//
// One `dbcode serve` process per window, over stdio, carries everything: the language client
// (sync, diagnostics, code actions, others' commits as workspace/applyEdit) and the dbcode://
// file system (dbcode/listFiles, readFile, writeFile, commit, subscribe).

import * as vscode from "vscode";
import { Connection, errorMessage, SCHEME } from "./connection";
import { DbcodeFileSystem } from "./fs";
import { PresenceStatus } from "./presence";
import { ReviewController } from "./review";
import { FileHistory } from "./timeline";

interface WorkspaceInfo {
  name: string;
  uri: string;
  files: number;
  seq: number;
}

let connection: Connection | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const conn = new Connection(context.secrets);
  connection = conn;
  const fs = new DbcodeFileSystem(conn);
  context.subscriptions.push(
    conn,
    fs,
    vscode.workspace.registerFileSystemProvider(SCHEME, fs, { isCaseSensitive: true }),
    vscode.workspace.onDidChangeConfiguration((e) => conn.onSettingsChanged(e)),
    vscode.commands.registerCommand("dbcode.openWorkspace", () => openWorkspace(conn)),
    vscode.commands.registerCommand("dbcode.restartServer", () =>
      conn.restart().catch((err) => vscode.window.showErrorMessage(errorMessage(err))),
    ),
    vscode.commands.registerCommand("dbcode.showLog", () => conn.output.show(true)),
    vscode.commands.registerCommand("dbcode.setToken", () => conn.setToken()),
    vscode.commands.registerCommand("dbcode.menu", () => menu(conn)),
    new ReviewController(conn),
    new PresenceStatus(conn),
    new FileHistory(conn),
  );
  // Start the server now when a dbcode folder is open (its files are about to be read).
  const hasDbcodeFolder = (vscode.workspace.workspaceFolders ?? []).some(
    (f) => f.uri.scheme === SCHEME,
  );
  if (hasDbcodeFolder) {
    void conn.start().catch(() => undefined);
  }
}

export async function deactivate(): Promise<void> {
  await connection?.stop();
  connection = undefined;
}

async function openWorkspace(conn: Connection): Promise<void> {
  let list: WorkspaceInfo[];
  try {
    list = await conn.request<WorkspaceInfo[]>("dbcode/workspaces", {});
  } catch (err) {
    void vscode.window.showErrorMessage(`dbcode: cannot list workspaces: ${errorMessage(err)}`);
    return;
  }
  if (!list.length) {
    void vscode.window.showInformationMessage(
      "dbcode: the database has no workspace yet. Create one with `dbcode import DIR --workspace NAME`.",
    );
    return;
  }
  const pick = await vscode.window.showQuickPick(
    list.map((w) => ({
      label: w.name,
      description: `${w.files} file${w.files === 1 ? "" : "s"} · seq ${w.seq}`,
      detail: w.uri,
      workspace: w,
    })),
    { title: "dbcode: Open Workspace", placeHolder: "Workspace stored in the database" },
  );
  if (!pick) {
    return;
  }
  const uri = vscode.Uri.from({ scheme: SCHEME, authority: pick.workspace.name, path: "/" });
  const folders = vscode.workspace.workspaceFolders ?? [];
  if (folders.some((f) => f.uri.toString() === uri.toString())) {
    await vscode.commands.executeCommand("workbench.view.explorer");
    return;
  }
  if (folders.length === 0 && !vscode.workspace.workspaceFile) {
    // An empty window: open the workspace as its folder (the window reloads with it). Adding a
    // folder here would go through an untitled .code-workspace file, which code-server
    // sometimes reopened without its folder.
    await vscode.commands.executeCommand("vscode.openFolder", uri, { forceReuseWindow: true });
    return;
  }
  const ok = vscode.workspace.updateWorkspaceFolders(folders.length, 0, {
    uri,
    name: `dbcode: ${pick.workspace.name}`,
  });
  if (!ok) {
    void vscode.window.showErrorMessage(`dbcode: could not add ${uri.toString()} as a folder`);
    return;
  }
  await vscode.commands.executeCommand("workbench.view.explorer");
}

async function menu(conn: Connection): Promise<void> {
  const other = conn.currentMode === "save" ? "live" : "save";
  const items: (vscode.QuickPickItem & { run: () => Thenable<unknown> })[] = [
    {
      label: "$(folder-opened) Open Workspace…",
      run: () => vscode.commands.executeCommand("dbcode.openWorkspace"),
    },
    {
      label: `$(sync) Switch to ${other} mode`,
      description:
        other === "live" ? "commit every edit as you type" : "commit only when you save",
      run: () =>
        vscode.workspace
          .getConfiguration("dbcode")
          .update("mode", other, vscode.ConfigurationTarget.Global),
    },
    {
      label: "$(key) Set Token…",
      description: "for a database that requires one",
      run: () => vscode.commands.executeCommand("dbcode.setToken"),
    },
    {
      label: "$(debug-restart) Restart Server",
      run: () => vscode.commands.executeCommand("dbcode.restartServer"),
    },
    { label: "$(output) Show Log", run: () => vscode.commands.executeCommand("dbcode.showLog") },
    {
      label: "$(gear) Settings",
      run: () => vscode.commands.executeCommand("workbench.action.openSettings", "dbcode."),
    },
  ];
  const pick = await vscode.window.showQuickPick(items, { title: "dbcode" });
  await pick?.run();
}
