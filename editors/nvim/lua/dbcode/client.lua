--- The `dbcode` LSP client: its configuration, starting (or finding) it, synchronous requests.
--- One client serves every dbcode:// buffer; it is started on first use, not per root.
local config = require("dbcode.config")
local handlers = require("dbcode.handlers")
local util = require("dbcode.util")

local M = {}

local client_id = nil --- the client this plugin started or found
--- The server answered the last started client's initialize with 401 (reset at each start).
M.auth_refused = false

local TOKEN_CMD_TIMEOUT_MS = 10000

--- The token to present (initializationOptions.token): token_cmd's output, else $DBCODE_TOKEN,
--- else nil (an open database needs none). Raises when token_cmd fails; its output is never
--- shown.
function M.token()
  local cmd = config.get().token_cmd
  if cmd == nil then
    local env = vim.env.DBCODE_TOKEN
    return (env ~= nil and env ~= "") and env or nil
  end
  local argv = type(cmd) == "string" and { "sh", "-c", cmd } or cmd
  local ok, proc = pcall(vim.system, argv, { text = true, stdin = false })
  if not ok then
    error(("dbcode: token_cmd could not run: %s"):format(tostring(proc)), 0)
  end
  local res = proc:wait(TOKEN_CMD_TIMEOUT_MS)
  if res.code ~= 0 or (res.signal and res.signal ~= 0) then
    local why = vim.split(vim.trim(res.stderr or ""), "\n", { plain = true })[1]
    if res.signal and res.signal ~= 0 then
      why = ("killed after %d ms (signal %d)"):format(TOKEN_CMD_TIMEOUT_MS, res.signal)
    end
    error(("dbcode: token_cmd failed (exit %d)%s"):format(
      res.code,
      (why and why ~= "") and (": " .. why) or ""
    ), 0)
  end
  local token = vim.trim(res.stdout or "")
  if token == "" or token:find("%s") then
    error("dbcode: token_cmd must print the token alone on one line: it printed "
      .. (token == "" and "nothing" or "more than one word"), 0)
  end
  return token
end

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

--- The base configuration (also returned by lsp/dbcode.lua for vim.lsp.config on 0.11+).
function M.default_lsp_config()
  return {
    name = "dbcode",
    cmd = vim.deepcopy(config.defaults.cmd),
    init_options = { mode = config.defaults.mode },
    handlers = handlers.table(),
    on_exit = handlers.on_exit,
  }
end

--- The vim.lsp.ClientConfig used to start the server: the defaults, then vim.lsp.config('dbcode')
--- (0.11+), then setup()'s options, then :Dbcode agent/mode.
function M.config()
  local cfg = M.default_lsp_config()
  if util.has_011 and vim.lsp.config then
    local ok, user = pcall(function()
      return vim.lsp.config.dbcode
    end)
    if ok and type(user) == "table" then
      cfg = vim.tbl_deep_extend("force", cfg, vim.deepcopy(user))
    end
  end
  local o = config.options
  if o then
    cfg.cmd = vim.deepcopy(o.cmd)
    if o.database_url then
      cfg.cmd_env = vim.tbl_extend("force", cfg.cmd_env or {}, {
        DBCODE_DATABASE_URL = o.database_url,
      })
    end
    cfg.init_options = vim.tbl_extend("force", cfg.init_options or {}, {
      agent = o.agent,
      mode = o.mode,
    })
  end
  cfg.init_options = vim.tbl_extend("force", cfg.init_options or {}, config.overrides)
  -- Diagnostics are taken as pushes: the server then sends every source together (ruff, syntax,
  -- conflicts, review threads, claims), each as soon as it changes. Pulled, it answers ruff and
  -- syntax only, and Neovim would only ask again on the buffer's own edits.
  local caps = vim.deepcopy(cfg.capabilities or vim.lsp.protocol.make_client_capabilities())
  if caps.textDocument then
    caps.textDocument.diagnostic = nil
  end
  -- Versioned edits: an edit pushed while typing still waits in the didChange debounce names
  -- an older version, and handlers.apply_edit refuses it instead of garbling the line.
  caps.workspace = caps.workspace or {}
  caps.workspace.workspaceEdit = caps.workspace.workspaceEdit or {}
  caps.workspace.workspaceEdit.documentChanges = true
  cfg.capabilities = caps
  cfg.init_options.pushDiagnostics = true
  if cfg.init_options.token ~= nil then
    -- vim.lsp.config('dbcode', {init_options = {token = ...}}): a token in clear in the
    -- configuration is not used (the contract: $DBCODE_TOKEN or token_cmd).
    cfg.init_options.token = nil
    vim.schedule(function()
      util.notify("dbcode: init_options.token is ignored: set $DBCODE_TOKEN or token_cmd",
        util.levels.WARN)
    end)
  end
  local user_init = cfg.on_init
  cfg.on_init = function(c, result)
    c.server_capabilities.diagnosticProvider = nil
    if type(user_init) == "function" then
      return user_init(c, result)
    end
  end
  -- This client serves dbcode:// buffers only; the plugin attaches them itself.
  cfg.name = "dbcode"
  cfg.root_dir = nil
  cfg.root_markers = nil
  cfg.filetypes = nil
  cfg.workspace_folders = nil
  return cfg
end

local function usable(client)
  return client and not util.call(client, "is_stopped")
end

--- The server command as a function that starts it like Neovim does and notes a 401 answer to
--- `initialize` (M.auth_refused) instead of passing it on: Neovim runs the initialize callback
--- scheduled, and an error answer only raises inside it (no on_error, a Lua error message).
local function watch_initialize(cfg)
  local argv = cfg.cmd
  return function(dispatchers)
    local rpc = vim.lsp.rpc.start(argv, dispatchers, {
      cwd = cfg.cmd_cwd,
      env = cfg.cmd_env,
      detached = cfg.detached,
    })
    local request = rpc.request
    rpc.request = function(method, params, callback, ...)
      if method == "initialize" then
        local answered = callback
        callback = function(err, result)
          if type(err) == "table" and err.code == config.AUTH_ERROR_CODE then
            M.auth_refused = true
            return
          end
          return answered(err, result)
        end
      end
      return request(method, params, callback, ...)
    end
    return rpc
  end
end

--- The running dbcode client, started (and initialized) if needed. Raises on failure.
function M.get()
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
    local cfg = M.config()
    local token = M.token()
    M.auth_refused = false
    if token then
      cfg.init_options.token = token
    end
    if type(cfg.cmd) == "table" then
      cfg.cmd = watch_initialize(cfg)
    end
    local id
    if util.has_011 then
      id = vim.lsp.start(cfg, { attach = false })
    else
      id = vim.lsp.start_client(cfg)
    end
    client = id and vim.lsp.get_client_by_id(id)
    if not client then
      error("dbcode: could not start the language server `" .. table.concat(
        type(cfg.cmd) == "table" and cfg.cmd or { "<function>" },
        " "
      ) .. "` (see :checkhealth dbcode)", 0)
    end
  end
  client_id = client.id
  local start_timeout = config.get().start_timeout_ms
  if not client.initialized then
    vim.wait(start_timeout, function()
      return client.initialized or M.auth_refused or util.call(client, "is_stopped")
    end, 10)
    if M.auth_refused and not client.initialized then
      util.call(client, "stop", true)
      client_id = nil
      error(config.AUTH_MESSAGE, 0)
    end
    if not client.initialized then
      local why = util.call(client, "is_stopped") and "exited while starting"
        or ("did not start within " .. start_timeout .. " ms")
      error("dbcode: the language server " .. why .. " (see :LspLog and :checkhealth dbcode)", 0)
    end
  end
  return client
end

--- A synchronous request: result, or nil and the error {code, message, data}.
function M.request(method, params, bufnr)
  local ok, client = pcall(M.get)
  if not ok then
    return nil, { message = (tostring(client):gsub("^dbcode: ", "")) }
  end
  local timeout_ms = config.get().timeout_ms
  local resp, why = util.call(client, "request_sync", method, params, timeout_ms, bufnr)
  if not resp then
    return nil, { message = ("%s: %s"):format(method, why or "no answer from the server") }
  end
  if resp.err then
    if resp.err.code == config.AUTH_ERROR_CODE then
      -- The token was rotated or revoked meanwhile: this session is over. The next request
      -- starts a new server, with the token as token_cmd / $DBCODE_TOKEN give it then.
      util.call(client, "stop")
      client_id = nil
      return nil, {
        code = resp.err.code,
        message = config.AUTH_MESSAGE:gsub("^dbcode: ", "") .. " (" .. tostring(resp.err.message)
          .. ")",
        data = resp.err.data,
      }
    end
    return nil, resp.err
  end
  return resp.result
end

--- Subscribe to a workspace's commits: each arrives as `User DbcodeDidCommit` (data: changeset).
function M.subscribe(workspace, since_seq)
  return M.request("dbcode/subscribe", { workspace = workspace, sinceSeq = since_seq })
end

return M
