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
  token_cmd = nil, -- a command whose stdout is your token (a list, or a string run by sh -c);
  -- nil: $DBCODE_TOKEN. Never a token in clear in the configuration.
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

--- What the server answers an unknown or missing token with (JSON-RPC error code), and what the
--- user is told then.
M.AUTH_ERROR_CODE = 401
M.AUTH_MESSAGE = "dbcode: token missing or refused — set $DBCODE_TOKEN or token_cmd "
  .. "(require('dbcode').setup{token_cmd = {...}}: a command that prints the token)"

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
  if opts.token ~= nil then
    error("dbcode: a token is never kept in the configuration: set $DBCODE_TOKEN, or token_cmd "
      .. "(a command that prints it, e.g. { 'pass', 'show', 'dbcode' })", level)
  end
  local tc = opts.token_cmd
  if tc ~= nil and not (type(tc) == "string" and tc ~= "")
    and not (type(tc) == "table" and #tc > 0) then
    error("dbcode: setup option token_cmd must be a command: a non-empty list or string", level)
  end
  if opts.mode and opts.mode ~= "save" and opts.mode ~= "live" then
    error("dbcode: mode must be 'save' or 'live'", level)
  end
  local options = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  if opts.cmd then
    options.cmd = vim.deepcopy(opts.cmd) -- a list is replaced, not merged
  end
  if type(opts.token_cmd) == "table" then
    options.token_cmd = vim.deepcopy(opts.token_cmd)
  end
  M.options = options
  return options
end

return M
