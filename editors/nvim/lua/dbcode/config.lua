--- The plugin's options: defaults, setup{} (validated), and the agent/mode changed at run time.
local M = {}

--- Options of `setup()`; see README.md.
M.defaults = {
  cmd = { "dbcode", "serve" }, -- the server; stdio
  database_url = nil, -- passed to the server as DBCODE_DATABASE_URL
  agent = nil, -- who authors your commits (server default: $DBCODE_AGENT, else user@host)
  mode = "save", -- "save": commit on :write; "live": every change is committed
  timeout_ms = 10000, -- for the synchronous requests (read, write, ...)
  start_timeout_ms = 30000, -- for the server to start (the embedded PostgreSQL may start too)
  notify_changes = true, -- vim.notify who changed an open file
}

local types = {
  cmd = "table",
  database_url = "string",
  agent = "string",
  mode = "string",
  timeout_ms = "number",
  start_timeout_ms = "number",
  notify_changes = "boolean",
}

M.options = nil --- set by setup(); nil: defaults (and vim.lsp.config('dbcode') on 0.11+)
M.overrides = {} --- agent/mode changed at run time (:Dbcode agent/mode), kept for restarts

--- The options in force: setup()'s, else the defaults.
function M.get()
  return M.options or M.defaults
end

--- Validate setup()'s options and keep them merged over the defaults. Errors name the option
--- (raised at `level`, the caller's caller by default).
function M.set(opts, level)
  level = level or 3
  for name, kind in pairs(types) do
    if opts[name] ~= nil and type(opts[name]) ~= kind then
      error(("dbcode: setup option %s must be a %s"):format(name, kind), level)
    end
  end
  if opts.mode and opts.mode ~= "save" and opts.mode ~= "live" then
    error("dbcode: mode must be 'save' or 'live'", level)
  end
  local options = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  if opts.cmd then
    options.cmd = vim.deepcopy(opts.cmd) -- a list is replaced, not merged
  end
  M.options = options
  return options
end

return M
