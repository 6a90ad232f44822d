--- :Dbcode and the pickers behind it: open a file, pick a workspace, the log, agent and mode.
local client = require("dbcode.client")
local config = require("dbcode.config")
local log = require("dbcode.log")
local uri = require("dbcode.uri")
local util = require("dbcode.util")

local api = vim.api
local levels = util.levels
local notify = util.notify

local M = {}

local function current_file()
  local info = vim.b.dbcode
  if type(info) == "table" and info.workspace then
    return info.workspace, info.path
  end
  return uri.parse(api.nvim_buf_get_name(0))
end

--- Open WORKSPACE/PATH; without PATH, pick one of the workspace's files (vim.ui.select).
function M.open(workspace, path)
  if path and path ~= "" then
    vim.cmd.edit(vim.fn.fnameescape(uri.make(workspace, path)))
    return
  end
  local files, err = client.request("dbcode/listFiles", { workspace = workspace })
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
  local list, err = client.request("dbcode/workspaces", vim.empty_dict())
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

--- Change this session's agent and/or mode (dbcode/configure); kept if the server restarts.
function M.configure(params)
  local res, err = client.request("dbcode/configure", params)
  if err then
    notify("dbcode: " .. (err.message or "configure failed"), levels.ERROR)
    return nil
  end
  if params.agent then
    config.overrides.agent = res.agent
  end
  if params.mode then
    config.overrides.mode = res.mode
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
    return log.open(args[1], args[2])
  end
  local ws, path = current_file()
  if not ws then
    notify("dbcode: not a dbcode buffer: use :Dbcode log WORKSPACE [PATH]", levels.ERROR)
    return
  end
  log.open(ws, (not bang and path ~= "") and path or nil)
end

subcommands.blame = function()
  require("dbcode.blame").toggle(0)
end

subcommands.comments = function(args)
  if args[1] then
    return require("dbcode.review").comments(args[1], args[2])
  end
  local ws = current_file()
  if not ws then
    notify("dbcode: not a dbcode buffer: use :Dbcode comments WORKSPACE [PATH]", levels.ERROR)
    return
  end
  require("dbcode.review").comments(ws)
end

subcommands.comment = function(_, _, opts)
  -- the text as typed (fargs would squeeze its spaces)
  local text = (opts.args or ""):gsub("^%s*comment!?%s*", "")
  require("dbcode.review").comment(0, opts.line1, opts.line2, text)
end

subcommands.who = function(args, bang)
  require("dbcode.review").who(0, bang, args[1])
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

--- Completion of :Dbcode: subcommands, modes, workspaces and paths (asked of the server).
function M.complete(arglead, cmdline)
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
  if (sub == "open" or sub == "log" or sub == "comments") and (#words == 2 or #words == 3) then
    local ok, c = pcall(client.get)
    if not ok or not c then
      return {}
    end
    if #words == 2 then
      local list = client.request("dbcode/workspaces", vim.empty_dict()) or {}
      return filter(vim.tbl_map(function(w)
        return w.name
      end, list))
    end
    local files = client.request("dbcode/listFiles", { workspace = words[2], prefix = arglead })
      or {}
    return vim.tbl_map(function(f)
      return f.path
    end, files)
  end
  return {}
end

--- :Dbcode {open|workspaces|log|blame|comments|comment|who|agent|mode} ...
function M.run(opts)
  local args = vim.deepcopy(opts.fargs)
  local sub = table.remove(args, 1)
  local bang = opts.bang
  if sub and sub:sub(-1) == "!" then -- :Dbcode log! (the bang after the subcommand)
    sub, bang = sub:sub(1, -2), true
  end
  local fn = sub and subcommands[sub]
  if not fn then
    notify(
      "dbcode: usage: :Dbcode open WS [PATH] | workspaces | log[!] [WS [PATH]] | blame "
        .. "| comments [WS [PATH]] | [range]comment TEXT | who[!] [WS] | agent [NAME] "
        .. "| mode [live|save]",
      levels.ERROR
    )
    return
  end
  fn(args, bang, opts)
end

return M
