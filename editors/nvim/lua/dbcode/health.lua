--- :checkhealth dbcode
local util = require("dbcode.util")

local M = {}

local function run(argv, env, timeout_ms)
  local ok, proc = pcall(vim.system, argv, { text = true, env = env })
  if not ok then
    return nil, tostring(proc)
  end
  local res = proc:wait(timeout_ms)
  if res.code ~= 0 then
    local why = vim.trim(res.stderr or "")
    if res.signal and res.signal ~= 0 then
      why = ("killed after %d ms (signal %d) %s"):format(timeout_ms, res.signal, why)
    end
    return nil, why ~= "" and why or ("exit code " .. res.code)
  end
  return vim.trim(res.stdout or "")
end

function M.check()
  local health = vim.health
  local dbcode = require("dbcode")

  health.start("dbcode: plugin")
  health.ok("dbcode.nvim " .. dbcode.version)
  local v = vim.version()
  local nv = ("%d.%d.%d"):format(v.major, v.minor, v.patch)
    .. (v.prerelease and ("-" .. tostring(v.prerelease)) or "")
  if vim.fn.has("nvim-0.10") == 1 then
    health.ok("Neovim " .. nv)
  else
    health.error("Neovim " .. nv .. ": dbcode.nvim needs 0.10 or newer")
  end
  health.info(dbcode.options and "configured with require('dbcode').setup{}"
    or "not set up: defaults (and vim.lsp.config('dbcode') on 0.11+)")

  health.start("dbcode: server")
  local config = dbcode.client_config()
  local cmd = config.cmd
  if type(cmd) ~= "table" then
    health.info("cmd is a function: cannot check the server command")
    return
  end
  local exe = vim.fn.exepath(cmd[1])
  if exe == "" then
    health.error(("server command not found: %s"):format(cmd[1]), {
      "pip install lsp-dbcode, or give the full path: require('dbcode').setup{cmd = "
        .. "{'/path/to/dbcode', 'serve'}}",
    })
    return
  end
  health.ok(("server command: %s (%s)"):format(table.concat(cmd, " "), exe))
  local prefix = dbcode.cli_prefix(cmd)
  local env = config.cmd_env
  local version, err = run(vim.list_extend(vim.deepcopy(prefix), { "--version" }), env, 15000)
  if version then
    health.ok("version: " .. version)
  else
    health.error("`" .. table.concat(prefix, " ") .. " --version` failed: " .. err)
  end
  local dsn
  dsn, err = run(vim.list_extend(vim.deepcopy(prefix), { "db" }), env, 60000)
  if dsn then
    health.ok("database: " .. dsn)
  else
    health.error("database not reachable: " .. err, {
      "set DBCODE_DATABASE_URL, or require('dbcode').setup{database_url = '...'}; without it "
        .. "the embedded PostgreSQL under $DBCODE_HOME is used",
    })
  end

  local o = require("dbcode.config").get()
  if o.token_cmd then
    local tc = type(o.token_cmd) == "table" and table.concat(o.token_cmd, " ") or o.token_cmd
    local ok, err = pcall(require("dbcode.client").token)
    if ok then
      health.ok("token: from token_cmd `" .. tc .. "`")
    else
      health.error(tostring(err), { "token_cmd must print the token (and nothing else)" })
    end
  elseif vim.env.DBCODE_TOKEN and vim.env.DBCODE_TOKEN ~= "" then
    health.ok("token: from $DBCODE_TOKEN")
  else
    health.info("no token ($DBCODE_TOKEN, token_cmd): fine for an open database; one with "
      .. "agents (`dbcode agent add`) answers 401")
  end

  local clients = vim.lsp.get_clients({ name = "dbcode" })
  if #clients == 0 then
    health.info("no dbcode client running (one starts with the first dbcode:// buffer)")
  end
  for _, client in ipairs(clients) do
    local n = vim.tbl_count(client.attached_buffers or {})
    local state = client.initialized and "running" or "starting"
    local res = client.initialized
        and util.call(client, "request_sync", "dbcode/configure", vim.empty_dict(), 2000)
      or nil
    local who = res and res.result
        and (", agent %s, mode %s"):format(res.result.agent, res.result.mode)
      or ""
    health.ok(("client %d %s%s, position encoding %s, %d buffer(s)"):format(
      client.id,
      state,
      who,
      tostring(client.offset_encoding),
      n
    ))
  end
end

return M
