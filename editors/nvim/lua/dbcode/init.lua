--- dbcode.nvim: edit a codebase stored in PostgreSQL through `dbcode serve`.
---
--- Buffers named `dbcode://<workspace>/<path>` are read and written through the language server
--- (`dbcode/readFile`, `dbcode/writeFile`): there is no file on disk. The server tracks each open
--- buffer, pushes other agents' commits into it as `workspace/applyEdit` (rebased over unsaved
--- edits), and shows overlapping edits as a conflict block with code actions to resolve it.
local M = {}

M.version = "0.1.0"

local api = vim.api
local has_011 = vim.fn.has("nvim-0.11") == 1
local levels = vim.log.levels

--- Options of `setup()`; see README.md.
local defaults = {
  cmd = { "dbcode", "serve" }, -- the server; stdio
  database_url = nil, -- passed to the server as DBCODE_DATABASE_URL
  agent = nil, -- who authors your commits (server default: $DBCODE_AGENT, else user@host)
  mode = "save", -- "save": commit on :write; "live": every change is committed
  timeout_ms = 10000, -- for the synchronous requests (read, write, ...)
  start_timeout_ms = 30000, -- for the server to start (the embedded PostgreSQL may start too)
  notify_changes = true, -- vim.notify who changed an open file
}

M.options = nil --- set by setup(); nil: defaults (and vim.lsp.config('dbcode') on 0.11+)
local overrides = {} --- agent/mode changed at run time (:Dbcode agent/mode), kept for restarts
local client_id = nil --- the client this plugin started or found
local log_entries = {} --- bufnr -> {line -> {workspace, path, revision}} of :Dbcode log buffers

local function notify(msg, level)
  vim.notify(msg, level or levels.INFO, { title = "dbcode" })
end

-- Client methods are called with ':' on 0.11+ and with '.' on 0.10.
local function cm(client, method, ...)
  if has_011 then
    return client[method](client, ...)
  end
  return client[method](...)
end

-- URIs ------------------------------------------------------------------------------------

local function encode_segment(s)
  return (s:gsub("[^A-Za-z0-9%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

local function decode(s)
  return (s:gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16))
  end))
end

--- `dbcode://<workspace>/<path>`, each segment percent-encoded (RFC 3986), as the server does.
function M.make_uri(workspace, path)
  local segs = {}
  for _, seg in ipairs(vim.split(path or "", "/", { plain = true })) do
    segs[#segs + 1] = encode_segment(seg)
  end
  return "dbcode://" .. encode_segment(workspace) .. "/" .. table.concat(segs, "/")
end

--- workspace, path (decoded; path may be "" or end with "/") of a dbcode:// URI, or nil.
function M.parse_uri(uri)
  local rest = type(uri) == "string" and uri:match("^dbcode://(.*)$")
  if not rest then
    return nil
  end
  local ws, path = rest:match("^([^/]*)/?(.*)$")
  if not ws or ws == "" then
    return nil
  end
  return decode(ws), decode(path)
end

-- The client -------------------------------------------------------------------------------

--- The CLI prefix of a server command: {"dbcode", "serve"} -> {"dbcode"} (for --version, db).
function M.cli_prefix(cmd)
  local out = {}
  for _, a in ipairs(cmd) do
    if a == "serve" then
      return out
    end
    out[#out + 1] = a
  end
  return { cmd[1] }
end

local function on_apply_edit(_, params, ctx)
  -- Like Neovim's handler, but an edit made for an older buffer version is refused (so the
  -- server merges again at once), a buffer that was unmodified stays unmodified (it still equals
  -- the database: the edit is another agent's commit), and the resulting didChange is sent now.
  local client = vim.lsp.get_client_by_id(ctx.client_id)
  if not client or not params or not params.edit then
    return { applied = false, failureReason = "no client or no edit" }
  end
  local edit = params.edit
  local bufs = {}
  for _, change in ipairs(edit.documentChanges or {}) do
    local doc = change.textDocument
    if doc and change.edits then
      local bufnr = vim.uri_to_bufnr(doc.uri)
      local v = doc.version
      local have = vim.lsp.util.buf_versions[bufnr] or 0
      if type(v) == "number" and v > 0 and api.nvim_buf_is_loaded(bufnr) and have > v then
        return {
          applied = false,
          failureReason = ("buffer %s is at version %d, the edit is for version %d"):format(
            doc.uri,
            have,
            v
          ),
        }
      end
      bufs[bufnr] = true
    end
  end
  for uri in pairs(edit.changes or {}) do
    bufs[vim.uri_to_bufnr(uri)] = true
  end
  local was_modified = {}
  for b in pairs(bufs) do
    was_modified[b] = api.nvim_buf_is_loaded(b) and vim.bo[b].modified
  end
  local ok, err = pcall(vim.lsp.util.apply_workspace_edit, edit, client.offset_encoding)
  if not ok then
    return { applied = false, failureReason = tostring(err) }
  end
  local ct_ok, changetracking = pcall(require, "vim.lsp._changetracking")
  for b in pairs(bufs) do
    if api.nvim_buf_is_loaded(b) then
      if not was_modified[b] then
        vim.bo[b].modified = false
      end
      if ct_ok then
        pcall(changetracking.flush, client, b)
      end
    end
  end
  return { applied = true }
end

local function on_log_message(err, params, ctx, ...)
  -- The server tells who changed an open file with window/logMessage.
  local default = vim.lsp.handlers["window/logMessage"]
  if default then
    default(err, params, ctx, ...)
  end
  local o = M.options or defaults
  if o.notify_changes and params and params.message then
    notify("dbcode: " .. params.message, levels.INFO)
  end
end

local function on_did_commit(_, params)
  -- dbcode/didCommit (after M.subscribe): re-emitted as `User DbcodeDidCommit` with the changeset.
  vim.schedule(function()
    api.nvim_exec_autocmds("User", { pattern = "DbcodeDidCommit", data = params, modeline = false })
  end)
end

local function on_exit(code, signal)
  if code ~= 0 and signal ~= 15 then
    vim.schedule(function()
      notify(
        ("dbcode: the language server exited (code %s, signal %s): see :LspLog and "
          .. ":checkhealth dbcode"):format(tostring(code), tostring(signal)),
        levels.ERROR
      )
    end)
  end
end

--- The base configuration (also returned by lsp/dbcode.lua for vim.lsp.config on 0.11+).
function M.default_lsp_config()
  return {
    name = "dbcode",
    cmd = vim.deepcopy(defaults.cmd),
    init_options = { mode = defaults.mode },
    handlers = {
      ["workspace/applyEdit"] = on_apply_edit,
      ["window/logMessage"] = on_log_message,
      ["dbcode/didCommit"] = on_did_commit,
    },
    on_exit = on_exit,
  }
end

--- The vim.lsp.ClientConfig used to start the server: the defaults, then vim.lsp.config('dbcode')
--- (0.11+), then setup()'s options, then :Dbcode agent/mode.
function M.client_config()
  local config = M.default_lsp_config()
  if has_011 and vim.lsp.config then
    local ok, user = pcall(function()
      return vim.lsp.config.dbcode
    end)
    if ok and type(user) == "table" then
      config = vim.tbl_deep_extend("force", config, vim.deepcopy(user))
    end
  end
  local o = M.options
  if o then
    config.cmd = vim.deepcopy(o.cmd)
    if o.database_url then
      config.cmd_env = vim.tbl_extend("force", config.cmd_env or {}, {
        DBCODE_DATABASE_URL = o.database_url,
      })
    end
    config.init_options = vim.tbl_extend("force", config.init_options or {}, {
      agent = o.agent,
      mode = o.mode,
    })
  end
  config.init_options = vim.tbl_extend("force", config.init_options or {}, overrides)
  -- This client serves dbcode:// buffers only; the plugin attaches them itself.
  config.name = "dbcode"
  config.root_dir = nil
  config.root_markers = nil
  config.filetypes = nil
  config.workspace_folders = nil
  return config
end

local function timeout()
  return (M.options or defaults).timeout_ms
end

local function usable(client)
  return client and not cm(client, "is_stopped")
end

--- The running dbcode client, started (and initialized) if needed. Raises on failure.
function M.client()
  local client = client_id and vim.lsp.get_client_by_id(client_id)
  if not usable(client) then
    client = nil
    for _, c in ipairs(vim.lsp.get_clients({ name = "dbcode" })) do
      if usable(c) then
        client = c
        break
      end
    end
  end
  if not client then
    local config = M.client_config()
    local id
    if has_011 then
      id = vim.lsp.start(config, { attach = false })
    else
      id = vim.lsp.start_client(config)
    end
    client = id and vim.lsp.get_client_by_id(id)
    if not client then
      error("dbcode: could not start the language server `" .. table.concat(
        type(config.cmd) == "table" and config.cmd or { "<function>" },
        " "
      ) .. "` (see :checkhealth dbcode)", 0)
    end
  end
  client_id = client.id
  local start_timeout = (M.options or defaults).start_timeout_ms
  if not client.initialized then
    vim.wait(start_timeout, function()
      return client.initialized or cm(client, "is_stopped")
    end, 10)
    if not client.initialized then
      local why = cm(client, "is_stopped") and "exited while starting"
        or ("did not start within " .. start_timeout .. " ms")
      error("dbcode: the language server " .. why .. " (see :LspLog and :checkhealth dbcode)", 0)
    end
  end
  return client
end

--- A synchronous request: result, or nil and the error {code, message, data}.
function M.request(method, params, bufnr)
  local ok, client = pcall(M.client)
  if not ok then
    return nil, { message = (tostring(client):gsub("^dbcode: ", "")) }
  end
  local resp, why = cm(client, "request_sync", method, params, timeout(), bufnr)
  if not resp then
    return nil, { message = ("%s: %s"):format(method, why or "no answer from the server") }
  end
  if resp.err then
    return nil, resp.err
  end
  return resp.result
end

--- Subscribe to a workspace's commits: each arrives as `User DbcodeDidCommit` (data: changeset).
function M.subscribe(workspace, since_seq)
  return M.request("dbcode/subscribe", { workspace = workspace, sinceSeq = since_seq })
end

-- Buffers ----------------------------------------------------------------------------------

local function line_ending(bufnr)
  local ff = vim.bo[bufnr].fileformat
  return ff == "dos" and "\r\n" or ff == "mac" and "\r" or "\n"
end

--- The buffer's text exactly as Neovim's LSP client reports it to the server.
function M.buf_text(bufnr)
  local nl = line_ending(bufnr)
  local text = table.concat(api.nvim_buf_get_lines(bufnr, 0, -1, true), nl)
  if vim.bo[bufnr].eol then
    text = text .. nl
  end
  return text
end

local function has_conflict_markers(bufnr)
  local open = false
  for _, l in ipairs(api.nvim_buf_get_lines(bufnr, 0, -1, false)) do
    if l:match("^<<<<<<<") then
      open = true
    elseif open and l:match("^>>>>>>>") then
      return true
    end
  end
  return false
end

local function set_text(bufnr, text, is_new)
  local ff = "unix"
  local body = text
  if text:find("\r\n", 1, true) and not text:gsub("\r\n", ""):find("\n", 1, true) then
    ff = "dos"
    body = text:gsub("\r\n", "\n")
  end
  local eol = body:sub(-1) == "\n"
  if eol then
    body = body:sub(1, -2)
  end
  local lines = vim.split(body, "\n", { plain = true })
  local ul = vim.bo[bufnr].undolevels
  vim.bo[bufnr].undolevels = -1 -- loading is not an undoable change
  api.nvim_buf_set_lines(bufnr, 0, -1, false, lines)
  vim.bo[bufnr].undolevels = ul
  vim.bo[bufnr].fileformat = ff
  vim.bo[bufnr].eol = eol or (is_new and text == "")
  vim.bo[bufnr].fixeol = false
  return #lines
end

local function listing(bufnr, workspace, prefix)
  local files, err = M.request("dbcode/listFiles", { workspace = workspace, prefix = prefix })
  if err then
    notify("dbcode: " .. (err.message or "cannot list files"), levels.ERROR)
    return
  end
  local lines, uris = {}, {}
  for _, f in ipairs(files) do
    lines[#lines + 1] = ("%-50s rev %-4d %s"):format(f.path, f.revision, f.updatedBy)
    uris[#lines] = f.uri
  end
  vim.bo[bufnr].buftype = "nofile"
  vim.bo[bufnr].swapfile = false
  vim.bo[bufnr].modifiable = true
  api.nvim_buf_set_lines(bufnr, 0, -1, false, #lines > 0 and lines or { "(no files)" })
  vim.bo[bufnr].modifiable = false
  vim.bo[bufnr].modified = false
  vim.keymap.set("n", "<CR>", function()
    local uri = uris[api.nvim_win_get_cursor(0)[1]]
    if uri then
      vim.cmd.edit(vim.fn.fnameescape(uri))
    end
  end, { buffer = bufnr, desc = "dbcode: open the file" })
end

--- BufReadCmd dbcode://*: fill the buffer from the database and attach the client.
function M.read(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local uri = api.nvim_buf_get_name(bufnr)
  local workspace, path = M.parse_uri(uri)
  if not workspace then
    notify("dbcode: not a dbcode://<workspace>/<path> URI: " .. uri, levels.ERROR)
    return
  end
  if path == "" or path:sub(-1) == "/" then
    listing(bufnr, workspace, path)
    return
  end
  local canonical = M.make_uri(workspace, path)
  if canonical ~= uri then
    -- The server names documents with percent-encoded segments: use that name, or others'
    -- commits would not find this buffer.
    local other
    for _, b in ipairs(api.nvim_list_bufs()) do
      if b ~= bufnr and api.nvim_buf_get_name(b) == canonical then
        other = b
      end
    end
    if other then
      notify(("dbcode: %s is already open as %s"):format(uri, canonical), levels.ERROR)
      return
    end
    api.nvim_buf_set_name(bufnr, canonical)
    uri = canonical
  end
  local ok, client = pcall(M.client)
  if not ok then
    notify(tostring(client), levels.ERROR)
    return
  end
  if vim.lsp.buf_is_attached(bufnr, client.id) then -- :edit! reloads: a fresh didOpen
    vim.lsp.buf_detach_client(bufnr, client.id)
  end
  local res, err = M.request("dbcode/readFile", { uri = uri }, bufnr)
  local is_new = false
  if err then
    if err.code ~= 404 then
      notify(("dbcode: cannot read %s: %s"):format(uri, err.message or vim.inspect(err)),
        levels.ERROR)
      return
    end
    is_new = true
    res = { text = "", revision = 0 }
  end
  vim.bo[bufnr].buftype = "acwrite" -- :write goes through BufWriteCmd, never to the disk
  vim.bo[bufnr].swapfile = false
  local nlines = set_text(bufnr, res.text, is_new)
  vim.b[bufnr].dbcode = { workspace = workspace, path = path, revision = res.revision }
  vim.bo[bufnr].modified = false
  local ft = vim.filetype.match({ filename = path, buf = bufnr })
  if ft then
    api.nvim_buf_call(bufnr, function()
      vim.bo[bufnr].filetype = ft
    end)
  end
  vim.lsp.buf_attach_client(bufnr, client.id)
  local what = is_new and "[New]" or ("revision %d, %dL, %dB"):format(res.revision, nlines, #res.text)
  api.nvim_echo({ { ('"%s" %s'):format(uri, what) } }, false, {})
end

--- BufWriteCmd dbcode://*: commit the buffer (`dbcode/writeFile`, rebased by the server).
function M.write(bufnr, target, force)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local own_uri = api.nvim_buf_get_name(bufnr)
  target = target or own_uri
  local own = target == own_uri
  local workspace, path = M.parse_uri(target)
  if not workspace or path == "" or path:sub(-1) == "/" then
    notify("dbcode: cannot write to " .. target .. ": not a dbcode://<workspace>/<path> URI",
      levels.ERROR)
    return false
  end
  if own and not force and has_conflict_markers(bufnr) then
    notify(
      ("dbcode: %s not saved: it has a conflict block. Resolve it first (code actions on the "
        .. "conflict: Keep mine / Take theirs / Keep both), or :write! to store the markers"):format(
        path
      ),
      levels.ERROR
    )
    return false
  end
  local ok, client = pcall(M.client)
  if not ok then
    notify(tostring(client), levels.ERROR)
    return false
  end
  local params = { uri = target, text = M.buf_text(bufnr) }
  local attached = own and vim.lsp.buf_is_attached(bufnr, client.id)
  if not own and not force then
    params.baseRevision = 0 -- like :write {file}: never overwrite an existing file without !
  elseif own and not attached and not force then
    -- The server does not track this buffer (it was restarted): compare-and-swap on the
    -- revision this buffer was read at, never a blind overwrite.
    params.baseRevision = (vim.b[bufnr].dbcode or {}).revision or 0
  end
  local res, err = M.request("dbcode/writeFile", params, bufnr)
  if err then
    local msg
    if err.code == 409 and own and not attached then
      msg = ("dbcode: %s not saved: it changed since this buffer was read (revision %s now); "
        .. "the server was restarted, so it cannot merge: save a copy, :edit! and redo"):format(
        path,
        tostring(type(err.data) == "table" and err.data.currentRevision or "?")
      )
    elseif err.code == 409 and own then
      msg = ("dbcode: %s not saved: it was changed meanwhile and your edits overlap. The "
        .. "conflict is shown in the buffer: resolve it (code actions), then :write again"):format(
        path
      )
    elseif err.code == 409 then
      msg = ("dbcode: %s exists (revision %s): add ! to overwrite"):format(
        target,
        tostring(type(err.data) == "table" and err.data.currentRevision or "?")
      )
    else
      msg = ("dbcode: %s not saved: %s"):format(path, err.message or vim.inspect(err))
    end
    notify(msg, levels.ERROR)
    return false
  end
  if own then
    vim.bo[bufnr].modified = false
    if not attached then
      vim.lsp.buf_attach_client(bufnr, client.id)
    end
    local info = vim.b[bufnr].dbcode or { workspace = workspace, path = path }
    info.revision = res.revision
    vim.b[bufnr].dbcode = info
  end
  api.nvim_echo(
    { { ('"%s" revision %d written (seq %d)'):format(target, res.revision, res.seq or 0) } },
    false,
    {}
  )
  return true
end

-- Commands ---------------------------------------------------------------------------------

local function current_file()
  local info = vim.b.dbcode
  if type(info) == "table" and info.workspace then
    return info.workspace, info.path
  end
  return M.parse_uri(api.nvim_buf_get_name(0))
end

--- Open WORKSPACE/PATH; without PATH, pick one of the workspace's files (vim.ui.select).
function M.open(workspace, path)
  if path and path ~= "" then
    vim.cmd.edit(vim.fn.fnameescape(M.make_uri(workspace, path)))
    return
  end
  local files, err = M.request("dbcode/listFiles", { workspace = workspace })
  if err then
    notify("dbcode: " .. (err.message or "cannot list files"), levels.ERROR)
    return
  end
  if #files == 0 then
    notify("dbcode: workspace " .. workspace .. " has no files", levels.WARN)
    return
  end
  vim.ui.select(files, {
    prompt = "dbcode://" .. workspace .. "/",
    kind = "dbcode.file",
    format_item = function(f)
      return ("%s  (rev %d, %s)"):format(f.path, f.revision, f.updatedBy)
    end,
  }, function(choice)
    if choice then
      vim.cmd.edit(vim.fn.fnameescape(choice.uri))
    end
  end)
end

--- Pick a workspace, then one of its files.
function M.workspaces()
  local list, err = M.request("dbcode/workspaces", vim.empty_dict())
  if err then
    notify("dbcode: " .. (err.message or "cannot list workspaces"), levels.ERROR)
    return
  end
  if #list == 0 then
    notify("dbcode: no workspaces yet (dbcode import DIR --workspace NAME)", levels.WARN)
    return
  end
  vim.ui.select(list, {
    prompt = "dbcode workspace",
    kind = "dbcode.workspace",
    format_item = function(w)
      return ("%s  (%d files, seq %d)"):format(w.name, w.files, w.seq)
    end,
  }, function(choice)
    if choice then
      M.open(choice.name)
    end
  end)
end

--- A new window below with a scratch buffer named `name` (wiped when hidden); returns it.
local function scratch_window(name)
  vim.cmd("botright new")
  local b = api.nvim_get_current_buf()
  vim.bo[b].buftype = "nofile"
  vim.bo[b].bufhidden = "wipe"
  vim.bo[b].swapfile = false
  pcall(api.nvim_buf_set_name, b, name)
  return b
end

local function show_revision(workspace, path, revision)
  local uri = M.make_uri(workspace, path)
  local res, err = M.request("dbcode/readFile", { uri = uri, revision = revision })
  if err then
    notify("dbcode: " .. (err.message or "cannot read"), levels.ERROR)
    return
  end
  local b = scratch_window(("dbcode-rev://%s/%s@%d"):format(workspace, path, revision))
  set_text(b, res.text, false)
  local ft = vim.filetype.match({ filename = path, buf = b })
  if ft then
    vim.bo[b].filetype = ft
  end
  vim.bo[b].modifiable = false
  vim.bo[b].modified = false
end

--- Changesets of a workspace (or of one file) in a scratch buffer, newest first.
function M.log(workspace, path, limit)
  local entries, err = M.request(
    "dbcode/log",
    { workspace = workspace, path = path, limit = limit or 200 }
  )
  if err then
    notify("dbcode: " .. (err.message or "cannot read the log"), levels.ERROR)
    return
  end
  local lines = {
    ("dbcode log %s%s   <CR> open the file · r show that revision · q close"):format(
      workspace,
      path and ("/" .. path) or ""
    ),
  }
  local refs = {}
  for _, cs in ipairs(entries) do
    local when = tostring(cs.time or ""):gsub("T", " "):sub(1, 19)
    local msg = (cs.message ~= nil and cs.message ~= vim.NIL) and cs.message or ""
    lines[#lines + 1] = ("seq %-6d %s  %-24s %s"):format(cs.seq, when, cs.agent, msg)
    for _, f in ipairs(cs.files or {}) do
      local from = (f.oldPath and f.oldPath ~= vim.NIL) and (" (from " .. f.oldPath .. ")") or ""
      lines[#lines + 1] = ("    %-7s %s  rev %d%s"):format(f.kind, f.path, f.revision, from)
      refs[#lines] = { workspace = workspace, path = f.path, revision = f.revision, kind = f.kind }
    end
  end
  local b = scratch_window(("dbcode-log://%s/%s"):format(workspace, path or ""))
  api.nvim_buf_set_lines(b, 0, -1, false, lines)
  vim.bo[b].modifiable = false
  vim.bo[b].modified = false
  vim.bo[b].filetype = "dbcodelog"
  log_entries[b] = refs
  api.nvim_create_autocmd("BufWipeout", {
    buffer = b,
    once = true,
    callback = function()
      log_entries[b] = nil
    end,
  })
  local function ref()
    return (log_entries[b] or {})[api.nvim_win_get_cursor(0)[1]]
  end
  vim.keymap.set("n", "<CR>", function()
    local r = ref()
    if r and r.kind ~= "delete" then
      vim.cmd("wincmd p")
      M.open(r.workspace, r.path)
    end
  end, { buffer = b, desc = "dbcode: open the file" })
  vim.keymap.set("n", "r", function()
    local r = ref()
    if r and r.kind ~= "delete" then
      show_revision(r.workspace, r.path, r.revision)
    end
  end, { buffer = b, desc = "dbcode: show this revision" })
  vim.keymap.set("n", "q", "<cmd>close<CR>", { buffer = b, desc = "close" })
  return b
end

--- Change this session's agent and/or mode (dbcode/configure); kept if the server restarts.
function M.configure(params)
  local res, err = M.request("dbcode/configure", params)
  if err then
    notify("dbcode: " .. (err.message or "configure failed"), levels.ERROR)
    return nil
  end
  if params.agent then
    overrides.agent = res.agent
  end
  if params.mode then
    overrides.mode = res.mode
  end
  notify(("dbcode: agent %s, mode %s"):format(res.agent, res.mode))
  return res
end

local subcommands = {}

subcommands.open = function(args)
  if not args[1] then
    return M.workspaces()
  end
  M.open(args[1], args[2])
end

subcommands.workspaces = function()
  M.workspaces()
end

subcommands.log = function(args, bang)
  if args[1] then
    return M.log(args[1], args[2])
  end
  local ws, path = current_file()
  if not ws then
    notify("dbcode: not a dbcode buffer: use :Dbcode log WORKSPACE [PATH]", levels.ERROR)
    return
  end
  M.log(ws, (not bang and path ~= "") and path or nil)
end

subcommands.agent = function(args)
  M.configure(args[1] and { agent = table.concat(args, " ") } or vim.empty_dict())
end

subcommands.mode = function(args)
  if args[1] ~= "live" and args[1] ~= "save" then
    if args[1] then
      notify("dbcode: mode is live or save", levels.ERROR)
      return
    end
    return M.configure(vim.empty_dict())
  end
  M.configure({ mode = args[1] })
end

local function complete(arglead, cmdline)
  local words = vim.split(cmdline:gsub("^%s*%S+%s*", ""), "%s+", { trimempty = false })
  local function filter(items)
    return vim.tbl_filter(function(s)
      return vim.startswith(s, arglead)
    end, items)
  end
  if #words <= 1 then
    return filter(vim.tbl_keys(subcommands))
  end
  local sub = words[1]
  if sub == "mode" and #words == 2 then
    return filter({ "live", "save" })
  end
  if (sub == "open" or sub == "log") and (#words == 2 or #words == 3) then
    local ok, client = pcall(M.client)
    if not ok or not client then
      return {}
    end
    if #words == 2 then
      local list = M.request("dbcode/workspaces", vim.empty_dict()) or {}
      return filter(vim.tbl_map(function(w)
        return w.name
      end, list))
    end
    local files = M.request("dbcode/listFiles", { workspace = words[2], prefix = arglead }) or {}
    return vim.tbl_map(function(f)
      return f.path
    end, files)
  end
  return {}
end

--- :Dbcode {open|workspaces|log|agent|mode} ...
function M.command(opts)
  local args = vim.deepcopy(opts.fargs)
  local sub = table.remove(args, 1)
  local bang = opts.bang
  if sub and sub:sub(-1) == "!" then -- :Dbcode log! (the bang after the subcommand)
    sub, bang = sub:sub(1, -2), true
  end
  local fn = sub and subcommands[sub]
  if not fn then
    notify(
      "dbcode: usage: :Dbcode open WS [PATH] | workspaces | log[!] [WS [PATH]] | agent [NAME] "
        .. "| mode [live|save]",
      levels.ERROR
    )
    return
  end
  fn(args, bang)
end

--- Autocommands and :Dbcode (idempotent; plugin/dbcode.lua calls it at startup).
function M._define()
  local group = api.nvim_create_augroup("dbcode", { clear = true })
  api.nvim_create_autocmd("BufReadCmd", {
    group = group,
    pattern = "dbcode://*",
    nested = true,
    desc = "dbcode: read the buffer from the database",
    callback = function(ev)
      M.read(ev.buf)
    end,
  })
  api.nvim_create_autocmd("BufWriteCmd", {
    group = group,
    pattern = "dbcode://*",
    nested = true,
    desc = "dbcode: commit the buffer",
    callback = function(ev)
      M.write(ev.buf, ev.match, vim.v.cmdbang == 1)
    end,
  })
  api.nvim_create_autocmd({ "FileWriteCmd", "FileAppendCmd", "FileReadCmd" }, {
    group = group,
    pattern = "dbcode://*",
    desc = "dbcode: not supported",
    callback = function(ev)
      notify(
        ("dbcode: %s of part of a buffer is not supported for %s"):format(ev.event, ev.match),
        levels.ERROR
      )
    end,
  })
  api.nvim_create_user_command("Dbcode", M.command, {
    nargs = "+",
    bang = true,
    complete = complete,
    desc = "dbcode: open WS [PATH] | workspaces | log[!] [WS [PATH]] | agent [NAME] | mode [MODE]",
  })
end

--- setup{cmd, database_url, agent, mode, timeout_ms, notify_changes}
function M.setup(opts)
  opts = opts or {}
  for name, kind in pairs({
    cmd = "table",
    database_url = "string",
    agent = "string",
    mode = "string",
    timeout_ms = "number",
    start_timeout_ms = "number",
    notify_changes = "boolean",
  }) do
    if opts[name] ~= nil and type(opts[name]) ~= kind then
      error(("dbcode: setup option %s must be a %s"):format(name, kind), 2)
    end
  end
  if opts.mode and opts.mode ~= "save" and opts.mode ~= "live" then
    error("dbcode: mode must be 'save' or 'live'", 2)
  end
  M.options = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts)
  if opts.cmd then
    M.options.cmd = vim.deepcopy(opts.cmd) -- a list is replaced, not merged
  end
  M._define()
  return M
end

return M
