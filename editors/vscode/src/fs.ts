// The `dbcode` file system: dbcode://WORKSPACE/PATH, served by `dbcode serve`.
//
// - Files are the database's files. Folders are not stored: a folder exists while a file lies
//   under it (as in git). `createDirectory` therefore only remembers the new, empty folder in
//   this window until a file is saved in it.
// - Each workspace that is used is subscribed (dbcode/subscribe) on the server connection; its
//   dbcode/didCommit notifications keep a listing cache current and become onDidChangeFile
//   events, so the Explorer follows other agents' commits. After a reconnect the subscription
//   resumes from the last seq seen (the server replays what was missed).
// - stat() reports mtime 0: the server makes every save a compare-and-swap on the buffer's base
//   revision, rebased by a 3-way merge, and pushes others' commits into open documents. VS
//   Code's own "the file on disk is newer" check would only refuse saves that the server merges
//   cleanly. The size still changes with the content, so clean editors reload on change.

import * as vscode from "vscode";
import { Connection, errorMessage, isPinned, isResponseError, SCHEME } from "./connection";

interface FileEntry {
  path: string;
  uri: string;
  revision: number;
  size: number;
  updatedBy?: string;
  updatedAt?: string;
  /** Size unknown since an update arrived: refetched on the next stat. */
  stale?: boolean;
}

interface CommitFile {
  path: string;
  uri: string;
  revision: number;
  kind: string;
  oldPath?: string;
}

interface DidCommit {
  workspace: string;
  seq: number;
  agent: string;
  message: string | null;
  time: string;
  files: CommitFile[];
}

class WorkspaceState {
  /** Current files. */
  readonly files = new Map<string, FileEntry>();
  /** Highest revision seen per path, deletions included. */
  readonly revisions = new Map<string, number>();
  /** Folders made by createDirectory, kept until a file appears under them or they are deleted. */
  readonly emptyDirs = new Set<string>();
  lastSeq = 0;
  ready: Promise<void> | undefined;
  /** didCommit notifications received while the listing loads (replayed on top of it). */
  buffer: DidCommit[] | undefined;

  constructor(readonly name: string) {}

  isDir(path: string): boolean {
    if (path === "") {
      return true;
    }
    const prefix = `${path}/`;
    for (const p of this.files.keys()) {
      if (p.startsWith(prefix)) {
        return true;
      }
    }
    for (const d of this.emptyDirs) {
      if (d === path || d.startsWith(prefix)) {
        return true;
      }
    }
    return false;
  }

  dirs(): Set<string> {
    const out = new Set<string>();
    for (const p of [...this.files.keys(), ...this.emptyDirs.values()]) {
      const parts = p.split("/");
      for (let i = 1; i < parts.length; i++) {
        out.add(parts.slice(0, i).join("/"));
      }
    }
    for (const d of this.emptyDirs) {
      out.add(d);
    }
    return out;
  }
}


function pathOf(uri: vscode.Uri): string {
  return uri.path.replace(/^\/+/, "").replace(/\/+$/, "");
}

function parentsOf(path: string): string[] {
  const parts = path.split("/");
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) {
    out.push(parts.slice(0, i).join("/"));
  }
  return out;
}

export class DbcodeFileSystem implements vscode.FileSystemProvider, vscode.Disposable {
  private readonly emitter = new vscode.EventEmitter<vscode.FileChangeEvent[]>();
  readonly onDidChangeFile = this.emitter.event;
  private readonly workspaces = new Map<string, WorkspaceState>();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly conn: Connection) {
    conn.onNotification("dbcode/didCommit", (params: DidCommit) => this.onDidCommit(params));
    this.disposables.push(
      conn.onDidRestart(() => {
        // A new server session: subscribe again, resuming after the last seq seen.
        for (const ws of this.workspaces.values()) {
          if (ws.ready) {
            ws.ready = this.load(ws).catch((err) => {
              ws.ready = undefined;
              this.conn.output.appendLine(`dbcode: resubscribe ${ws.name}: ${errorMessage(err)}`);
            });
          }
        }
      }),
    );
  }

  dispose(): void {
    this.emitter.dispose();
    for (const d of this.disposables) {
      d.dispose();
    }
  }

  uri(workspace: string, path: string): vscode.Uri {
    return vscode.Uri.from({ scheme: SCHEME, authority: workspace, path: `/${path}` });
  }

  // -- the listing cache, fed by dbcode/subscribe ---------------------------------------------

  private async workspace(uri: vscode.Uri): Promise<WorkspaceState> {
    const name = uri.authority;
    if (!name) {
      throw vscode.FileSystemError.FileNotFound(uri);
    }
    let ws = this.workspaces.get(name);
    if (!ws) {
      ws = new WorkspaceState(name);
      this.workspaces.set(name, ws);
    }
    if (!ws.ready) {
      const state = ws;
      ws.ready = this.load(ws).catch((err) => {
        state.ready = undefined; // retried on next use (e.g. the workspace did not exist yet)
        throw err;
      });
    }
    try {
      await ws.ready;
    } catch (err) {
      throw this.fsError(err, uri);
    }
    return ws;
  }

  private async load(ws: WorkspaceState): Promise<void> {
    const buffer: DidCommit[] = [];
    ws.buffer = buffer;
    try {
      const sub = await this.conn.request<{ seq: number }>("dbcode/subscribe", {
        workspace: ws.name,
        ...(ws.lastSeq ? { sinceSeq: ws.lastSeq } : {}),
      });
      const list = await this.conn.request<FileEntry[]>("dbcode/listFiles", {
        workspace: ws.name,
      });
      const before = new Map(ws.files);
      ws.files.clear();
      for (const f of list) {
        ws.files.set(f.path, f);
        ws.revisions.set(f.path, Math.max(f.revision, ws.revisions.get(f.path) ?? 0));
      }
      ws.lastSeq = Math.max(ws.lastSeq, sub.seq);
      if (ws.buffer === buffer) {
        ws.buffer = undefined;
      }
      for (const cs of buffer) {
        this.apply(ws, cs, false);
      }
      if (before.size) {
        this.fireDiff(ws, before);
      }
    } finally {
      if (ws.buffer === buffer) {
        ws.buffer = undefined;
      }
    }
  }

  private onDidCommit(cs: DidCommit): void {
    const ws = this.workspaces.get(cs.workspace);
    if (!ws) {
      return;
    }
    if (ws.buffer) {
      ws.buffer.push(cs);
      return;
    }
    this.apply(ws, cs, true);
  }

  /** Apply one changeset to the cache (each file only if newer than what we know). */
  private apply(ws: WorkspaceState, cs: DidCommit, fire: boolean): void {
    ws.lastSeq = Math.max(ws.lastSeq, cs.seq);
    const dirsBefore = ws.dirs();
    const events: vscode.FileChangeEvent[] = [];
    const openDocs = new Set(
      vscode.workspace.textDocuments
        .filter((d) => d.uri.scheme === SCHEME)
        .map((d) => d.uri.toString()),
    );
    for (const f of cs.files) {
      const known = ws.revisions.get(f.path) ?? 0;
      if (f.revision <= known) {
        continue;
      }
      ws.revisions.set(f.path, f.revision);
      const uri = this.uri(ws.name, f.path);
      const gone = f.kind === "delete" || f.kind === "moved";
      if (gone) {
        if (ws.files.delete(f.path)) {
          events.push({ type: vscode.FileChangeType.Deleted, uri });
        }
        continue;
      }
      const existed = ws.files.has(f.path);
      ws.files.set(f.path, {
        path: f.path,
        uri: f.uri,
        revision: f.revision,
        size: existed ? ws.files.get(f.path)!.size : 0,
        updatedBy: cs.agent,
        updatedAt: cs.time,
        stale: true,
      });
      for (const d of parentsOf(f.path)) {
        ws.emptyDirs.delete(d);
      }
      if (!existed) {
        events.push({ type: vscode.FileChangeType.Created, uri });
      } else if (!openDocs.has(uri.toString())) {
        // Open documents get the change from the server as a workspace/applyEdit (rebased
        // onto unsaved edits); a reload from here would only race with it.
        events.push({ type: vscode.FileChangeType.Changed, uri });
      }
      if (f.kind === "rename" && f.oldPath && ws.files.delete(f.oldPath)) {
        events.push({ type: vscode.FileChangeType.Deleted, uri: this.uri(ws.name, f.oldPath) });
      }
    }
    const dirsAfter = ws.dirs();
    for (const d of dirsAfter) {
      if (!dirsBefore.has(d)) {
        events.push({ type: vscode.FileChangeType.Created, uri: this.uri(ws.name, d) });
      }
    }
    for (const d of dirsBefore) {
      if (!dirsAfter.has(d)) {
        events.push({ type: vscode.FileChangeType.Deleted, uri: this.uri(ws.name, d) });
      }
    }
    if (fire && events.length) {
      this.emitter.fire(events);
    }
  }

  /** After a reload of the listing: events for what changed while we were not subscribed. */
  private fireDiff(ws: WorkspaceState, before: Map<string, FileEntry>): void {
    const events: vscode.FileChangeEvent[] = [];
    for (const [path, f] of ws.files) {
      const old = before.get(path);
      if (!old) {
        events.push({ type: vscode.FileChangeType.Created, uri: this.uri(ws.name, path) });
      } else if (old.revision !== f.revision) {
        events.push({ type: vscode.FileChangeType.Changed, uri: this.uri(ws.name, path) });
      }
    }
    for (const path of before.keys()) {
      if (!ws.files.has(path)) {
        events.push({ type: vscode.FileChangeType.Deleted, uri: this.uri(ws.name, path) });
      }
    }
    if (events.length) {
      this.emitter.fire(events);
    }
  }

  private async entry(ws: WorkspaceState, path: string): Promise<FileEntry | undefined> {
    const f = ws.files.get(path);
    if (f?.stale) {
      const list = await this.conn.request<FileEntry[]>("dbcode/listFiles", {
        workspace: ws.name,
        prefix: path,
      });
      const fresh = list.find((x) => x.path === path);
      const cur = ws.files.get(path);
      if (fresh && cur && fresh.revision >= cur.revision) {
        ws.files.set(path, fresh);
        return fresh;
      }
      if (cur && cur.revision > (fresh?.revision ?? 0)) {
        return cur; // a newer change arrived meanwhile
      }
      return ws.files.get(path);
    }
    return f;
  }

  // -- FileSystemProvider ------------------------------------------------------------------------

  watch(uri: vscode.Uri): vscode.Disposable {
    if (isPinned(uri)) {
      return new vscode.Disposable(() => undefined); // history does not change
    }
    // Every workspace in use is subscribed once for the whole session; watching adds nothing.
    void this.workspace(uri).catch(() => undefined);
    return new vscode.Disposable(() => undefined);
  }

  async stat(uri: vscode.Uri): Promise<vscode.FileStat> {
    if (isPinned(uri)) {
      // An old revision (the Timeline's diffs): read-only, its size is its text's.
      const size = (await this.readPinned(uri)).length;
      return {
        type: vscode.FileType.File,
        ctime: 0,
        mtime: 0,
        size,
        permissions: vscode.FilePermission.Readonly,
      };
    }
    const ws = await this.workspace(uri);
    const path = pathOf(uri);
    if (path !== "") {
      const f = await this.entry(ws, path);
      if (f) {
        return { type: vscode.FileType.File, ctime: 0, mtime: 0, size: f.size };
      }
    }
    if (ws.isDir(path)) {
      return { type: vscode.FileType.Directory, ctime: 0, mtime: 0, size: 0 };
    }
    throw vscode.FileSystemError.FileNotFound(uri);
  }

  async readDirectory(uri: vscode.Uri): Promise<[string, vscode.FileType][]> {
    const ws = await this.workspace(uri);
    const path = pathOf(uri);
    if (ws.files.has(path)) {
      throw vscode.FileSystemError.FileNotADirectory(uri);
    }
    if (!ws.isDir(path)) {
      throw vscode.FileSystemError.FileNotFound(uri);
    }
    const prefix = path ? `${path}/` : "";
    const out = new Map<string, vscode.FileType>();
    const names = [...ws.files.keys(), ...ws.emptyDirs.values()];
    for (const p of names) {
      if (!p.startsWith(prefix) || p === path) {
        continue;
      }
      const rest = p.slice(prefix.length);
      const slash = rest.indexOf("/");
      if (slash >= 0) {
        out.set(rest.slice(0, slash), vscode.FileType.Directory);
      } else if (!out.has(rest)) {
        out.set(rest, ws.files.has(p) ? vscode.FileType.File : vscode.FileType.Directory);
      }
    }
    return [...out.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  private async readPinned(uri: vscode.Uri): Promise<Uint8Array> {
    try {
      const res = await this.conn.request<{ text: string }>("dbcode/readFile", {
        uri: uri.toString(),
      });
      return new TextEncoder().encode(res.text);
    } catch (err) {
      throw this.fsError(err, uri);
    }
  }

  async readFile(uri: vscode.Uri): Promise<Uint8Array> {
    if (isPinned(uri)) {
      return this.readPinned(uri);
    }
    const path = pathOf(uri);
    if (path === "") {
      throw vscode.FileSystemError.FileIsADirectory(uri);
    }
    const ws = await this.workspace(uri);
    if (!ws.files.has(path)) {
      // The listing is kept current by the subscription: spare the server VS Code's many
      // probes for files that do not exist (.vscode/settings.json, ...).
      if (ws.isDir(path)) {
        throw vscode.FileSystemError.FileIsADirectory(uri);
      }
      throw vscode.FileSystemError.FileNotFound(uri);
    }
    try {
      const res = await this.conn.request<{ text: string; revision: number }>("dbcode/readFile", {
        uri: uri.toString(),
      });
      return new TextEncoder().encode(res.text);
    } catch (err) {
      throw this.fsError(err, uri);
    }
  }

  async writeFile(
    uri: vscode.Uri,
    content: Uint8Array,
    options: { readonly create: boolean; readonly overwrite: boolean },
  ): Promise<void> {
    this.refusePinned(uri);
    const path = pathOf(uri);
    if (path === "") {
      throw vscode.FileSystemError.FileIsADirectory(uri);
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(content);
    } catch {
      throw new vscode.FileSystemError(
        `dbcode stores UTF-8 text only: ${path} is not valid UTF-8 (nothing was written)`,
      );
    }
    const key = uri.toString();
    if (this.conn.cleanSaves.get(key) === text) {
      // The server just pushed this revision into a clean editor: it is in the database already.
      this.conn.cleanSaves.delete(key);
      return;
    }
    let ws: WorkspaceState | undefined;
    try {
      ws = await this.workspace(uri);
    } catch {
      ws = undefined; // a new workspace: it comes into being with this write
    }
    let exists = false;
    if (ws) {
      exists = ws.files.has(path);
      if (!exists && ws.isDir(path)) {
        throw vscode.FileSystemError.FileIsADirectory(uri);
      }
      for (const parent of parentsOf(path)) {
        if (ws.files.has(parent)) {
          throw vscode.FileSystemError.FileNotADirectory(this.uri(ws.name, parent));
        }
      }
    }
    if (!exists && !options.create) {
      throw vscode.FileSystemError.FileNotFound(uri);
    }
    if (exists && !options.overwrite) {
      throw vscode.FileSystemError.FileExists(uri);
    }
    // No baseRevision: for a document open in this session the server saves it like the
    // buffer's own save (compare-and-swap on the buffer's base revision, rebased by a 3-way
    // merge); otherwise it writes it as given. With create-only, the file must not exist.
    const params: Record<string, unknown> = { uri: key, text };
    if (!options.overwrite) {
      params.baseRevision = 0;
    }
    try {
      await this.conn.request("dbcode/writeFile", params);
    } catch (err) {
      if (isResponseError(err) && err.code === 409 && !options.overwrite) {
        throw vscode.FileSystemError.FileExists(uri);
      }
      throw this.fsError(err, uri);
    }
    if (ws && !ws.files.has(path)) {
      // Known at once (the didCommit follows), so that VS Code's stat after a write finds it.
      ws.files.set(path, {
        path,
        uri: key,
        revision: 0,
        size: content.byteLength,
        stale: true,
      });
      for (const d of parentsOf(path)) {
        ws.emptyDirs.delete(d);
      }
    } else if (ws) {
      const f = ws.files.get(path)!;
      ws.files.set(path, { ...f, size: content.byteLength, stale: true });
    }
  }

  async createDirectory(uri: vscode.Uri): Promise<void> {
    this.refusePinned(uri);
    // Folders are not stored: they exist through the files under them. An empty folder lives
    // in this window until a file is saved in it.
    const ws = await this.workspace(uri).catch(() => undefined);
    const path = pathOf(uri);
    if (!ws || path === "") {
      return;
    }
    if (ws.files.has(path)) {
      throw vscode.FileSystemError.FileExists(uri);
    }
    for (const parent of parentsOf(path)) {
      if (ws.files.has(parent)) {
        throw vscode.FileSystemError.FileNotADirectory(this.uri(ws.name, parent));
      }
    }
    if (!ws.isDir(path)) {
      ws.emptyDirs.add(path);
      this.emitter.fire([{ type: vscode.FileChangeType.Created, uri }]);
    }
  }

  async delete(uri: vscode.Uri, options: { readonly recursive: boolean }): Promise<void> {
    this.refusePinned(uri);
    const ws = await this.workspace(uri);
    const path = pathOf(uri);
    const files = await this.filesAt(ws, path, uri);
    if (files.length === 0) {
      // An empty folder of this window only.
      const dropped = [...ws.emptyDirs].filter((d) => d === path || d.startsWith(`${path}/`));
      if (!dropped.length) {
        throw vscode.FileSystemError.FileNotFound(uri);
      }
      for (const d of dropped) {
        ws.emptyDirs.delete(d);
      }
      this.emitter.fire([{ type: vscode.FileChangeType.Deleted, uri }]);
      return;
    }
    const isDir = !(files.length === 1 && files[0].path === path);
    if (isDir && !options.recursive) {
      throw vscode.FileSystemError.NoPermissions(
        `dbcode: ${path || ws.name} is a folder with ${files.length} file(s); delete it recursively`,
      );
    }
    await this.commit(
      ws,
      uri,
      isDir ? `delete ${path || "all files"}/` : `delete ${path}`,
      files.map((f) => ({ uri: this.uri(ws.name, f.path).toString(), text: null, baseRevision: f.revision })),
    );
    for (const f of files) {
      ws.files.delete(f.path);
    }
    for (const d of [...ws.emptyDirs]) {
      if (d === path || d.startsWith(`${path}/`)) {
        ws.emptyDirs.delete(d);
      }
    }
  }

  async rename(
    oldUri: vscode.Uri,
    newUri: vscode.Uri,
    options: { readonly overwrite: boolean },
  ): Promise<void> {
    this.refusePinned(oldUri, newUri);
    if (oldUri.authority !== newUri.authority) {
      throw vscode.FileSystemError.NoPermissions(
        "dbcode: moving files between workspaces is not supported; copy, then delete",
      );
    }
    const ws = await this.workspace(oldUri);
    const from = pathOf(oldUri);
    const to = pathOf(newUri);
    if (from === "" || to === "") {
      throw vscode.FileSystemError.NoPermissions("dbcode: a workspace root cannot be renamed");
    }
    if (to === from || to.startsWith(`${from}/`)) {
      throw vscode.FileSystemError.NoPermissions(`dbcode: cannot move ${from} into itself`);
    }
    const files = await this.filesAt(ws, from, oldUri);
    const isDir = !(files.length === 1 && files[0].path === from);
    if (files.length === 0) {
      if (![...ws.emptyDirs].some((d) => d === from || d.startsWith(`${from}/`))) {
        throw vscode.FileSystemError.FileNotFound(oldUri);
      }
    }
    const targetExists = ws.files.has(to) || ws.isDir(to);
    if (targetExists && !options.overwrite) {
      throw vscode.FileSystemError.FileExists(newUri);
    }
    const changes: { uri: string; text: string | null; baseRevision: number }[] = [];
    const moved = new Set<string>();
    for (const f of files) {
      const dest = isDir ? `${to}${f.path.slice(from.length)}` : to;
      const src = this.uri(ws.name, f.path).toString();
      const read = await this.conn
        .request<{ text: string; revision: number }>("dbcode/readFile", { uri: src })
        .catch((err) => {
          throw this.fsError(err, this.uri(ws.name, f.path));
        });
      const existing = ws.files.get(dest);
      changes.push({
        uri: this.uri(ws.name, dest).toString(),
        text: read.text,
        baseRevision: existing ? existing.revision : 0,
      });
      changes.push({ uri: src, text: null, baseRevision: read.revision });
      moved.add(dest);
    }
    if (changes.length) {
      await this.commit(ws, oldUri, `rename ${from} -> ${to}`, changes);
    }
    for (const d of [...ws.emptyDirs]) {
      if (d === from || d.startsWith(`${from}/`)) {
        ws.emptyDirs.delete(d);
        ws.emptyDirs.add(`${to}${d.slice(from.length)}`);
      }
    }
  }

  /** The files at PATH: the file itself, or every file under the folder PATH (fresh list). */
  private async filesAt(ws: WorkspaceState, path: string, uri: vscode.Uri): Promise<FileEntry[]> {
    let list: FileEntry[];
    try {
      list = await this.conn.request<FileEntry[]>("dbcode/listFiles", {
        workspace: ws.name,
        prefix: path,
      });
    } catch (err) {
      throw this.fsError(err, uri);
    }
    const exact = list.find((f) => f.path === path);
    if (exact) {
      return [exact];
    }
    return list.filter((f) => path === "" || f.path.startsWith(`${path}/`));
  }

  private async commit(
    ws: WorkspaceState,
    uri: vscode.Uri,
    message: string,
    changes: { uri: string; text: string | null; baseRevision: number }[],
  ): Promise<void> {
    try {
      await this.conn.request("dbcode/commit", { workspace: ws.name, message, changes });
    } catch (err) {
      throw this.fsError(err, uri);
    }
  }

  /** Server errors as FileSystemErrors with a clear message. */
  /** Old revisions are history: never written, deleted or renamed. */
  private refusePinned(...uris: vscode.Uri[]): void {
    for (const uri of uris) {
      if (isPinned(uri)) {
        throw vscode.FileSystemError.NoPermissions(uri);
      }
    }
  }

  private fsError(err: unknown, uri: vscode.Uri): Error {
    if (err instanceof vscode.FileSystemError) {
      return err;
    }
    if (isResponseError(err)) {
      const data = (err.data ?? {}) as { uri?: string; currentRevision?: number };
      switch (err.code) {
        case 404:
          return vscode.FileSystemError.FileNotFound(uri);
        case 409: {
          const path = pathOf(uri);
          const rev = data.currentRevision;
          return new vscode.FileSystemError(
            `dbcode: ${path} changed in the database meanwhile` +
              (rev !== undefined ? ` (now revision ${rev})` : "") +
              " and your edits overlap it; nothing was written. Resolve the conflict in the " +
              "editor (quick fixes on the red ranges), then save again.",
          );
        }
        case 503:
          return vscode.FileSystemError.Unavailable(`dbcode: database unavailable: ${err.message}`);
        default:
          return new vscode.FileSystemError(`dbcode: ${err.message}`);
      }
    }
    return vscode.FileSystemError.Unavailable(`dbcode: ${errorMessage(err)}`);
  }
}
