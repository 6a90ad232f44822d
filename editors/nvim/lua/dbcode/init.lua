--- dbcode.nvim: edit a codebase stored in PostgreSQL through `dbcode serve`.
---
--- Buffers named `dbcode://<workspace>/<path>` are read and written through the language server
--- (`dbcode/readFile`, `dbcode/writeFile`): there is no file on disk. The server tracks each open
--- buffer, pushes other agents' commits into it as `workspace/applyEdit` (rebased over unsaved
--- edits), and shows overlapping edits as a conflict block with code actions to resolve it.
---
--- This module is the public API and the wiring (setup, autocommands, :Dbcode); the work is done
--- by one module per concern, loaded on first use:
---   dbcode.uri       dbcode:// URIs (pure)
---   dbcode.config    options: defaults, setup{}, agent/mode changed at run time
---   dbcode.client    the LSP client: configuration, start, synchronous requests, subscribe
---   dbcode.handlers  what the server sends: applyEdit, logMessage, didCommit, exit
---   dbcode.buffer    dbcode:// buffers: read (BufReadCmd), write (BufWriteCmd), text in/out
---   dbcode.conflict  conflict blocks, found as the server finds them (never written)
---   dbcode.commands  :Dbcode and its pickers
---   dbcode.log       the log view and read-only revisions
---   dbcode.blame     :Dbcode blame: who last changed each run of lines, as virtual text
---   dbcode.review    :Dbcode comments / comment / who: review threads and presence
---   dbcode.health    :checkhealth dbcode
local config = require("dbcode.config")

local M = {}

M.version = "0.1.0"

-- `M.options` is config.options (set by setup(); nil: defaults and vim.lsp.config('dbcode')).
setmetatable(M, {
  __index = function(_, key)
    if key == "options" then
      return config.options
    end
  end,
  __newindex = function(t, key, value)
    if key == "options" then
      config.options = value
    else
      rawset(t, key, value)
    end
  end,
})

--- `dbcode://<workspace>/<path>`, each segment percent-encoded (RFC 3986), as the server does.
function M.make_uri(workspace, path)
  return require("dbcode.uri").make(workspace, path)
end

--- workspace, path (decoded; path may be "" or end with "/") of a dbcode:// URI, or nil.
function M.parse_uri(uri)
  return require("dbcode.uri").parse(uri)
end

--- The CLI prefix of a server command: {"dbcode", "serve"} -> {"dbcode"} (for --version, db).
function M.cli_prefix(cmd)
  return require("dbcode.client").cli_prefix(cmd)
end

--- The base configuration (also returned by lsp/dbcode.lua for vim.lsp.config on 0.11+).
function M.default_lsp_config()
  return require("dbcode.client").default_lsp_config()
end

--- The vim.lsp.ClientConfig used to start the server: the defaults, then vim.lsp.config('dbcode')
--- (0.11+), then setup()'s options, then :Dbcode agent/mode.
function M.client_config()
  return require("dbcode.client").config()
end

--- The running dbcode client, started (and initialized) if needed. Raises on failure.
function M.client()
  return require("dbcode.client").get()
end

--- A synchronous request: result, or nil and the error {code, message, data}.
function M.request(method, params, bufnr)
  return require("dbcode.client").request(method, params, bufnr)
end

--- Subscribe to a workspace's commits: each arrives as `User DbcodeDidCommit` (data: changeset).
function M.subscribe(workspace, since_seq)
  return require("dbcode.client").subscribe(workspace, since_seq)
end

--- The buffer's text exactly as Neovim's LSP client reports it to the server.
function M.buf_text(bufnr)
  return require("dbcode.buffer").text(bufnr)
end

--- BufReadCmd dbcode://*: fill the buffer from the database and attach the client.
function M.read(bufnr)
  return require("dbcode.buffer").read(bufnr)
end

--- BufWriteCmd dbcode://*: commit the buffer (`dbcode/writeFile`, rebased by the server). Text
--- with a conflict block is never written, whatever the target and `force` (:write!).
function M.write(bufnr, target, force)
  return require("dbcode.buffer").write(bufnr, target, force)
end

--- Open WORKSPACE/PATH; without PATH, pick one of the workspace's files (vim.ui.select).
function M.open(workspace, path)
  return require("dbcode.commands").open(workspace, path)
end

--- Pick a workspace, then one of its files.
function M.workspaces()
  return require("dbcode.commands").workspaces()
end

--- Changesets of a workspace (or of one file) in a scratch buffer, newest first.
function M.log(workspace, path, limit)
  return require("dbcode.log").open(workspace, path, limit)
end

--- Show the blame of a dbcode:// buffer as virtual text, or hide it; true when now shown.
function M.blame(bufnr)
  return require("dbcode.blame").toggle(bufnr)
end

--- The open review threads of a workspace (or of one file) in the quickfix list.
function M.comments(workspace, path)
  return require("dbcode.review").comments(workspace, path)
end

--- Open a review thread on lines first..last (1-based) of a dbcode:// buffer: {thread, id}.
function M.comment(bufnr, first, last, text, kind, replacement)
  return require("dbcode.review").comment(bufnr, first, last, text, kind, replacement)
end

--- Notify who has the buffer's file (whole: any file of its workspace) open; the rows.
function M.who(bufnr, whole)
  return require("dbcode.review").who(bufnr, whole)
end

--- Change this session's agent and/or mode (dbcode/configure); kept if the server restarts.
function M.configure(params)
  return require("dbcode.commands").configure(params)
end

--- :Dbcode {open|workspaces|log|blame|comments|comment|who|agent|mode} ...
function M.command(opts)
  return require("dbcode.commands").run(opts)
end

--- Autocommands and :Dbcode (idempotent; plugin/dbcode.lua calls it at startup).
function M._define()
  local api = vim.api
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
      require("dbcode.util").notify(
        ("dbcode: %s of part of a buffer is not supported for %s"):format(ev.event, ev.match),
        vim.log.levels.ERROR
      )
    end,
  })
  api.nvim_create_user_command("Dbcode", M.command, {
    nargs = "+",
    bang = true,
    range = true,
    complete = function(arglead, cmdline)
      return require("dbcode.commands").complete(arglead, cmdline)
    end,
    desc = "dbcode: open | workspaces | log | blame | comments | comment | who | agent | mode",
  })
end

--- setup{cmd, database_url, agent, mode, timeout_ms, start_timeout_ms, notify_changes}
function M.setup(opts)
  config.set(opts or {}, 3)
  M._define()
  return M
end

return M
