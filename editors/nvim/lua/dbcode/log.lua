--- The log view (:Dbcode log): a workspace's or a file's changesets in a scratch buffer, newest
--- first; <CR> opens the file of the line, `r` opens the file as it was right after that
--- changeset (`dbcode://WS@SEQ/PATH`, read-only), `q` closes.
local client = require("dbcode.client")
local uri = require("dbcode.uri")
local util = require("dbcode.util")

local api = vim.api
local levels = util.levels
local notify = util.notify

local M = {}

M.changesets_max = 200 --- changesets shown when the caller gives no limit

local entries = {} --- bufnr -> {line -> {workspace, path, revision, kind}} of log buffers

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

--- The file as it was right after changeset `seq`: `dbcode://WS@SEQ/PATH`, read-only
--- ('nomodifiable'), in a new window below; returns the buffer.
function M.open_at(workspace, path, seq)
  vim.cmd("botright split " .. vim.fn.fnameescape(uri.make(workspace, path, seq)))
  return api.nvim_get_current_buf()
end

--- The lines of the view and, per line that names a file, what it refers to.
local function render(workspace, path, changesets)
  local lines = {
    ("dbcode log %s%s   <CR> open the file · r the file at that seq · q close"):format(
      workspace,
      path and ("/" .. path) or ""
    ),
  }
  local refs = {}
  for _, cs in ipairs(changesets) do
    local when = tostring(cs.time or ""):gsub("T", " "):sub(1, 19)
    local msg = (cs.message ~= nil and cs.message ~= vim.NIL) and cs.message or ""
    lines[#lines + 1] = ("seq %-6d %s  %-24s %s"):format(cs.seq, when, cs.agent, msg)
    for _, f in ipairs(cs.files or {}) do
      local from = (f.oldPath and f.oldPath ~= vim.NIL) and (" (from " .. f.oldPath .. ")") or ""
      lines[#lines + 1] = ("    %-7s %s  rev %d%s"):format(f.kind, f.path, f.revision, from)
      refs[#lines] = {
        workspace = workspace,
        path = f.path,
        revision = f.revision,
        kind = f.kind,
        seq = cs.seq,
      }
    end
  end
  return lines, refs
end

--- Changesets of a workspace (or of one file) in a scratch buffer, newest first; returns it.
function M.open(workspace, path, limit)
  local changesets, err = client.request(
    "dbcode/log",
    { workspace = workspace, path = path, limit = limit or M.changesets_max }
  )
  if err then
    notify("dbcode: " .. (err.message or "cannot read the log"), levels.ERROR)
    return
  end
  local lines, refs = render(workspace, path, changesets)
  local b = scratch_window(("dbcode-log://%s/%s"):format(workspace, path or ""))
  api.nvim_buf_set_lines(b, 0, -1, false, lines)
  vim.bo[b].modifiable = false
  vim.bo[b].modified = false
  vim.bo[b].filetype = "dbcodelog"
  entries[b] = refs
  api.nvim_create_autocmd("BufWipeout", {
    buffer = b,
    once = true,
    callback = function()
      entries[b] = nil
    end,
  })
  local function ref()
    return (entries[b] or {})[api.nvim_win_get_cursor(0)[1]]
  end
  vim.keymap.set("n", "<CR>", function()
    local r = ref()
    if r and r.kind ~= "delete" then
      vim.cmd("wincmd p")
      vim.cmd.edit(vim.fn.fnameescape(uri.make(r.workspace, r.path)))
    end
  end, { buffer = b, desc = "dbcode: open the file" })
  vim.keymap.set("n", "r", function()
    local r = ref()
    if r and r.kind ~= "delete" then
      M.open_at(r.workspace, r.path, r.seq)
    end
  end, { buffer = b, desc = "dbcode: the file as it was after this changeset" })
  vim.keymap.set("n", "q", "<cmd>close<CR>", { buffer = b, desc = "close" })
  return b
end

return M
