// The one connection to `dbcode serve`: a vscode-languageclient LanguageClient over stdio.
//
// The LanguageClient does the standard LSP work (document sync, diagnostics, code actions,
// formatting, others' edits as workspace/applyEdit, messages); the file system provider
// (fs.ts) sends its dbcode/* requests over the same connection.

import * as vscode from "vscode";
import {
  ApplyWorkspaceEditParams,
  ApplyWorkspaceEditRequest,
  ApplyWorkspaceEditResult,
  LanguageClient,
  LanguageClientOptions,
  ResponseError,
  ServerOptions,
  State,
} from "vscode-languageclient/node";

export const SCHEME = "dbcode";

/** dbcode://WS@SEQ/PATH: the file as it was right after changeset SEQ (read-only history). */
export function isPinned(uri: vscode.Uri): boolean {
  return uri.scheme === SCHEME && uri.authority.includes("@");
}
const RETRY_AFTER_MS = 5000;
/** JSON-RPC code of "authentication required" (SPEC: Identity and access). */
const AUTH_REQUIRED_CODE = 401;
export const TOKEN_MISSING_MESSAGE =
  "dbcode: token missing or refused — run \"dbcode: Set Token…\" and paste the token that " +
  "`dbcode agent add NAME` (or `dbcode agent rotate NAME`) printed for you.";

/** SecretStorage key of the token for a database (tokens belong to one database). */
export function tokenKey(databaseUrl: string): string {
  return `dbcode.token:${databaseUrl || "(server default)"}`;
}

function isAuthError(err: unknown): boolean {
  if (err instanceof ResponseError && err.code === AUTH_REQUIRED_CODE) {
    return true;
  }
  return /^authentication required/.test(errorMessage(err));
}

export interface Settings {
  command: string;
  args: string[];
  databaseUrl: string;
  agent: string;
  mode: "save" | "live";
}

export function readSettings(): Settings {
  const cfg = vscode.workspace.getConfiguration("dbcode");
  const python = (cfg.get<string>("pythonPath") ?? "").trim();
  let command: string;
  let args: string[];
  if (python) {
    command = python;
    args = ["-m", "lsp_dbcode", "serve"];
  } else {
    const cmd = (cfg.get<string[]>("serverCommand") ?? []).filter((s) => typeof s === "string");
    [command, ...args] = cmd.length ? cmd : ["dbcode", "serve"];
  }
  const mode = cfg.get<string>("mode") === "live" ? "live" : "save";
  return {
    command,
    args,
    databaseUrl: (cfg.get<string>("databaseUrl") ?? "").trim(),
    agent: (cfg.get<string>("agent") ?? "").trim(),
    mode,
  };
}

/** Text the provider expects VS Code to save unchanged (see Connection.handleApplyEdit). */
export type CleanSaves = Map<string, string>;

export class Connection implements vscode.Disposable {
  readonly output: vscode.LogOutputChannel;
  private client: LanguageClient | undefined;
  private starting: Promise<LanguageClient> | undefined;
  private lastFailure: { time: number; message: string } | undefined;
  /** Server sessions started so far (a later one must restore subscriptions). */
  private sessions = 0;
  private readonly status: vscode.StatusBarItem;
  private agent = "";
  private mode: "save" | "live" = "save";
  private readonly disposables: vscode.Disposable[] = [];
  /** method -> handlers (several parts of the extension may follow one notification). */
  private readonly notificationHandlers = new Map<string, ((params: any) => void)[]>();
  private readonly runningEmitter = new vscode.EventEmitter<void>();
  /** Fires when a new server session replaces an earlier one: subscriptions must be renewed. */
  readonly onDidRestart = this.runningEmitter.event;
  /** uri -> text: a document the server updated while it was clean, being saved unchanged. */
  readonly cleanSaves: CleanSaves = new Map();

  constructor(private readonly secrets: vscode.SecretStorage) {
    this.output = vscode.window.createOutputChannel("dbcode", { log: true });
    this.status = vscode.window.createStatusBarItem("dbcode.status", vscode.StatusBarAlignment.Left);
    this.status.name = "dbcode";
    this.status.command = "dbcode.menu";
    this.updateStatus(false);
    this.status.show();
  }

  get isRunning(): boolean {
    return this.client?.state === State.Running;
  }

  get currentMode(): "save" | "live" {
    return this.mode;
  }

  /** The agent that authors this session's changes ("" until the server said). */
  get currentAgent(): string {
    return this.agent;
  }

  /** Register a server notification handler (kept across restarts). */
  onNotification(method: string, handler: (params: any) => void): void {
    const handlers = this.notificationHandlers.get(method);
    if (handlers) {
      handlers.push(handler);
      return;
    }
    this.notificationHandlers.set(method, [handler]);
    this.client?.onNotification(method, (params) => this.dispatch(method, params));
  }

  private dispatch(method: string, params: unknown): void {
    for (const handler of this.notificationHandlers.get(method) ?? []) {
      try {
        handler(params);
      } catch (err) {
        this.output.appendLine(`dbcode: ${method} handler failed: ${errorMessage(err)}`);
      }
    }
  }

  /** The running client, started on first use. */
  async start(): Promise<LanguageClient> {
    if (this.client && this.client.state !== State.Stopped) {
      // Running, or (re)starting: its requests wait for the connection.
      return this.client;
    }
    if (!this.starting) {
      this.starting = this.doStart().finally(() => {
        this.starting = undefined;
      });
    }
    return this.starting;
  }

  private async doStart(): Promise<LanguageClient> {
    if (this.lastFailure && Date.now() - this.lastFailure.time < RETRY_AFTER_MS) {
      throw new Error(this.lastFailure.message); // do not respawn a failing server per request
    }
    if (this.client) {
      // Stopped after too many crashes, or a settings change: start a fresh one.
      const old = this.client;
      this.client = undefined;
      await old.dispose().catch(() => undefined);
    }
    const s = readSettings();
    this.mode = s.mode;
    this.agent = s.agent;
    const env: Record<string, string> = { ...(process.env as Record<string, string>) };
    if (s.databaseUrl) {
      env.DBCODE_DATABASE_URL = s.databaseUrl;
    }
    const serverOptions: ServerOptions = {
      command: s.command,
      args: s.args,
      // No `transport`: TransportKind.stdio would append --stdio, which `dbcode serve` refuses.
      options: { env },
    };
    const initializationOptions: Record<string, string> = { mode: s.mode };
    if (s.agent) {
      initializationOptions.agent = s.agent;
    }
    // The token lives in VS Code's SecretStorage ("dbcode: Set Token…"), never in settings; it
    // goes to the server in initializationOptions only (not in the environment or the log).
    const token = await this.secrets.get(tokenKey(s.databaseUrl));
    if (token) {
      initializationOptions.token = token;
    }
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: SCHEME }],
      initializationOptions,
      outputChannel: this.output,
      // A refused initialize is reported once, below (401: how to set the token); no retry.
      initializationFailedHandler: () => false,
      // An old revision (dbcode://WS@SEQ/PATH, the Timeline's diffs) is not a session
      // document: the server keeps no buffer for it, so only hover (blame) applies to it.
      diagnosticPullOptions: { filter: (doc) => isPinned(doc.uri) },
      middleware: {
        workspace: {
          handleApplyEdit: (params, next) => this.handleApplyEdit(params, next),
        },
        provideDiagnostics: (doc, previousResultId, token, next) =>
          isPinned(doc instanceof vscode.Uri ? doc : doc.uri)
            ? ({ kind: "full", items: [] } as never) // pulled on open, whatever the filter says
            : next(doc, previousResultId, token),
        provideDocumentSymbols: (doc, token, next) =>
          isPinned(doc.uri) ? [] : next(doc, token),
        provideFoldingRanges: (doc, ctx, token, next) =>
          isPinned(doc.uri) ? [] : next(doc, ctx, token),
        provideCodeActions: (doc, range, ctx, token, next) =>
          isPinned(doc.uri) ? [] : next(doc, range, ctx, token),
        provideDocumentFormattingEdits: (doc, options, token, next) =>
          isPinned(doc.uri) ? [] : next(doc, options, token),
        provideDocumentRangeFormattingEdits: (doc, range, options, token, next) =>
          isPinned(doc.uri) ? [] : next(doc, range, options, token),
      },
    };
    const client = new LanguageClient("dbcode", "dbcode", serverOptions, clientOptions);
    this.client = client;
    for (const method of this.notificationHandlers.keys()) {
      client.onNotification(method, (params) => this.dispatch(method, params));
    }
    let wasRunning = false;
    client.onDidChangeState((e) => {
      this.output.info(`dbcode: client state ${State[e.oldState]} -> ${State[e.newState]}`);
      const running = e.newState === State.Running;
      this.updateStatus(running);
      if (running && wasRunning) {
        // Restarted after a crash: refresh what the session knows.
        void this.afterStart(client, true);
      }
      wasRunning = wasRunning || running;
    });
    this.output.appendLine(
      `dbcode: starting ${[s.command, ...s.args].join(" ")}` +
        (s.databaseUrl ? " (DBCODE_DATABASE_URL from dbcode.databaseUrl)" : ""),
    );
    try {
      await client.start();
    } catch (err) {
      this.updateStatus(false);
      if (isAuthError(err)) {
        this.output.appendLine(`${TOKEN_MISSING_MESSAGE} (${errorMessage(err)})`);
        this.lastFailure = { time: Date.now(), message: TOKEN_MISSING_MESSAGE };
        await client.dispose().catch(() => undefined);
        if (this.client === client) {
          this.client = undefined;
        }
        void vscode.window.showErrorMessage(TOKEN_MISSING_MESSAGE, "Set Token…").then((pick) => {
          if (pick) {
            void vscode.commands.executeCommand("dbcode.setToken");
          }
        });
        throw new Error(TOKEN_MISSING_MESSAGE);
      }
      const msg =
        `dbcode: could not start the language server \`${[s.command, ...s.args].join(" ")}\`: ` +
        `${errorMessage(err)}. See its output in "dbcode: Show Log"; set dbcode.serverCommand ` +
        "or dbcode.pythonPath.";
      this.output.appendLine(msg);
      this.lastFailure = { time: Date.now(), message: msg };
      await client.dispose().catch(() => undefined);
      if (this.client === client) {
        this.client = undefined;
      }
      void vscode.window.showErrorMessage(msg, "Show Log", "Open Settings").then((pick) => {
        if (pick === "Show Log") {
          this.output.show(true);
        } else if (pick) {
          void vscode.commands.executeCommand("workbench.action.openSettings", "dbcode.");
        }
      });
      throw new Error(msg);
    }
    this.lastFailure = undefined;
    await this.afterStart(client, this.sessions++ > 0);
    return client;
  }

  private async afterStart(client: LanguageClient, restarted: boolean): Promise<void> {
    try {
      // An empty configure answers the effective agent and mode of this session.
      const res = (await client.sendRequest("dbcode/configure", {})) as {
        agent: string;
        mode: "save" | "live";
      };
      this.agent = res.agent;
      this.mode = res.mode;
    } catch (err) {
      this.output.appendLine(`dbcode/configure failed: ${errorMessage(err)}`);
    }
    this.updateStatus(client.state === State.Running);
    if (restarted) {
      this.runningEmitter.fire();
    }
  }

  /** A request over the shared connection (starting the server if needed). */
  async request<R>(method: string, params: unknown): Promise<R> {
    const client = await this.start();
    return (await client.sendRequest(method, params)) as R;
  }

  /** Settings changed: agent/mode go to the running session, the rest restarts it. */
  async onSettingsChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
    if (!e.affectsConfiguration("dbcode")) {
      return;
    }
    const restart = ["serverCommand", "pythonPath", "databaseUrl"].some((k) =>
      e.affectsConfiguration(`dbcode.${k}`),
    );
    if (restart) {
      if (this.client) {
        this.output.appendLine("dbcode: server settings changed; restarting the server");
        await this.restart();
      }
      return;
    }
    const s = readSettings();
    if (!this.client || !this.isRunning) {
      this.mode = s.mode;
      this.agent = s.agent || this.agent;
      this.updateStatus(false);
      return;
    }
    const params: Record<string, string> = {};
    if (e.affectsConfiguration("dbcode.mode")) {
      params.mode = s.mode;
    }
    if (e.affectsConfiguration("dbcode.agent") && s.agent) {
      params.agent = s.agent;
    }
    try {
      const res = (await this.client.sendRequest("dbcode/configure", params)) as {
        agent: string;
        mode: "save" | "live";
      };
      this.agent = res.agent;
      this.mode = res.mode;
      this.updateStatus(this.isRunning);
    } catch (err) {
      void vscode.window.showErrorMessage(`dbcode: ${errorMessage(err)}`);
    }
  }

  /** "dbcode: Set Token…": ask for the token (a password box), keep it in SecretStorage for
   * this database, and start a new session with it. An empty answer removes it. */
  async setToken(): Promise<void> {
    const s = readSettings();
    const value = await vscode.window.showInputBox({
      title: "dbcode: Set Token",
      prompt:
        "The token `dbcode agent add` printed (dbc_…), for " +
        `${s.databaseUrl || "the server's default database"}. ` +
        "Kept in VS Code's secret storage, never in settings. Empty: remove it.",
      password: true,
      ignoreFocusOut: true,
      placeHolder: "dbc_…",
      validateInput: (v) =>
        v.trim() === "" || /^dbc_\S+$/.test(v.trim())
          ? undefined
          : "a dbcode token looks like dbc_<agent id>_<secret>",
    });
    if (value === undefined) {
      return;
    }
    const key = tokenKey(s.databaseUrl);
    if (value.trim()) {
      await this.secrets.store(key, value.trim());
      this.output.appendLine("dbcode: token stored in secret storage; restarting the server");
    } else {
      await this.secrets.delete(key);
      this.output.appendLine("dbcode: token removed; restarting the server");
    }
    await this.restart().catch(() => undefined);
  }

  async restart(): Promise<void> {
    this.lastFailure = undefined;
    const old = this.client;
    this.client = undefined;
    if (old) {
      await old.dispose().catch(() => undefined);
    }
    this.updateStatus(false);
    await this.start();
  }

  /**
   * Others' commits reach open documents as workspace/applyEdit. vscode-languageclient applies
   * them and leaves the document dirty. A document that was clean holds exactly the new
   * revision afterwards, so it is saved at once; the file system provider recognises that text
   * and does not commit it again (cleanSaves). Documents with unsaved edits stay dirty: they
   * hold the user's edits rebased onto the new revision.
   */
  private async handleApplyEdit(
    params: ApplyWorkspaceEditParams,
    next: ApplyWorkspaceEditRequest.HandlerSignature,
  ): Promise<ApplyWorkspaceEditResult | ResponseError<void>> {
    const uris = new Set<string>();
    const edit = params.edit;
    for (const change of edit.documentChanges ?? []) {
      if ("textDocument" in change && change.textDocument?.uri) {
        uris.add(vscode.Uri.parse(change.textDocument.uri).toString());
      }
    }
    for (const uri of Object.keys(edit.changes ?? {})) {
      uris.add(vscode.Uri.parse(uri).toString());
    }
    const clean = vscode.workspace.textDocuments.filter(
      (d) => d.uri.scheme === SCHEME && uris.has(d.uri.toString()) && !d.isDirty,
    );
    const result = await next(params, new vscode.CancellationTokenSource().token);
    if (result && !(result instanceof ResponseError) && result.applied) {
      for (const doc of clean) {
        if (!doc.isDirty || doc.isClosed) {
          continue;
        }
        const editorCfg = vscode.workspace.getConfiguration("editor", doc);
        const onSave = editorCfg.get<Record<string, unknown>>("codeActionsOnSave") ?? {};
        if (editorCfg.get<boolean>("formatOnSave") || Object.keys(onSave).length) {
          continue; // saving would format it: leave it dirty rather than commit a reformat
        }
        const key = doc.uri.toString();
        this.cleanSaves.set(key, doc.getText());
        doc.save().then(
          () => this.cleanSaves.delete(key),
          () => this.cleanSaves.delete(key),
        );
      }
    }
    return result;
  }

  private updateStatus(connected: boolean): void {
    const agent = this.agent || "(server default)";
    this.status.text = `$(database) dbcode: ${agent} · ${this.mode} · ${
      connected ? "connected" : "disconnected"
    }`;
    this.status.tooltip = connected
      ? "dbcode: connected to the language server. Click for dbcode commands."
      : "dbcode: not connected to the language server. Click for dbcode commands.";
    this.status.backgroundColor = connected
      ? undefined
      : new vscode.ThemeColor("statusBarItem.warningBackground");
  }

  dispose(): void {
    void this.client?.dispose();
    this.client = undefined;
    this.status.dispose();
    this.output.dispose();
    this.runningEmitter.dispose();
    for (const d of this.disposables) {
      d.dispose();
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) {
      await client.dispose().catch(() => undefined);
    }
  }
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    return err.message;
  }
  return String(err);
}

export function isResponseError(err: unknown): err is ResponseError<any> {
  return err instanceof ResponseError;
}
