--- Review and presence: :Dbcode comments (open threads in the quickfix list), :Dbcode comment
--- (open a thread on the lines of a range) and :Dbcode who (who else has a file open).
--- The threads themselves show as diagnostics (source `review`) through Neovim's LSP support.
local blame = require("dbcode.blame")
local client = require("dbcode.client")
local uri = require("dbcode.uri")
local util = require("dbcode.util")

local api = vim.api
local levels = util.levels
local notify = util.notify

local M = {}

local qf_types = { blocking = "W", suggestion = "N", note = "I" }

--- workspace, path of a buffer (nil if it is no dbcode:// buffer).
local function buffer_file(bufnr)
  local info = vim.b[bufnr].dbcode
  if type(info) == "table" and info.workspace then
    return info.workspace, info.path
  end
  return uri.parse(api.nvim_buf_get_name(bufnr))
end

--- One quickfix item per thread: the place it is at now, "agent: first comment".
function M.items(threads)
  local items = {}
  for _, t in ipairs(threads) do
    local first = (t.comments or {})[1] or { agent = "?", text = "" }
    local text = ("%s: %s"):format(first.agent, (first.text:gsub("\n", " ")))
    local extra = {}
    if t.kind and t.kind ~= "note" then
      extra[#extra + 1] = t.kind
    end
    if t.outdated then
      extra[#extra + 1] = "outdated"
    end
    if #(t.comments or {}) > 1 then
      extra[#extra + 1] = ("%d replies"):format(#t.comments - 1)
    end
    if #extra > 0 then
      text = text .. "  [" .. table.concat(extra, ", ") .. "]"
    end
    local rng = t.range ~= vim.NIL and t.range or nil
    items[#items + 1] = {
      filename = t.uri,
      lnum = rng and rng.start.line + 1 or 1,
      col = rng and rng.start.character + 1 or 1,
      end_lnum = rng and rng["end"].line + 1 or nil,
      text = text,
      type = qf_types[t.kind] or "I",
      user_data = { thread = t.thread, workspace = (uri.parse(t.uri)) },
    }
  end
  return items
end

--- The open threads of a workspace (or of one file) in the quickfix list, opened; returns them.
function M.comments(workspace, path)
  local params = { workspace = workspace }
  if path and path ~= "" then
    params.path = path
  end
  local threads, err = client.request("dbcode/comments", params)
  if err then
    notify("dbcode: cannot list comments: " .. (err.message or vim.inspect(err)), levels.ERROR)
    return nil
  end
  local title = ("dbcode comments %s%s"):format(workspace, params.path and ("/" .. path) or "")
  vim.fn.setqflist({}, " ", { title = title, items = M.items(threads) })
  if #threads == 0 then
    notify(("dbcode: no open threads in %s"):format(title:sub(17)))
    return threads
  end
  vim.cmd("botright copen")
  return threads
end

--- Width of `s` in the client's position encoding (utf-8 bytes, utf-16 or utf-32 units).
local function units(s, encoding)
  if encoding == "utf-8" then
    return #s
  end
  if util.has_011 then
    return vim.str_utfindex(s, encoding == "utf-16" and "utf-16" or "utf-32")
  end
  local u32, u16 = vim.str_utfindex(s)
  return encoding == "utf-16" and u16 or u32
end

--- Open a thread on lines first..last (1-based, inclusive) of a dbcode:// buffer; returns
--- {thread, id}. kind: note (default), suggestion (with replacement) or blocking.
function M.comment(bufnr, first, last, text, kind, replacement)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local name = api.nvim_buf_get_name(bufnr)
  local workspace, path = buffer_file(bufnr)
  if not workspace or uri.is_folder(path) then
    notify("dbcode: comment needs a dbcode://<workspace>/<path> buffer, not " .. name, levels.ERROR)
    return nil
  end
  if not text or vim.trim(text) == "" then
    notify("dbcode: usage: :[range]Dbcode comment TEXT (the lines of the range, or the cursor's)",
      levels.ERROR)
    return nil
  end
  if vim.bo[bufnr].modified then
    notify(("dbcode: %s has unsaved edits: :write first (a comment is placed on the stored "
      .. "revision's lines)"):format(path), levels.ERROR)
    return nil
  end
  local ok, c = pcall(client.get)
  if not ok then
    notify(tostring(c), levels.ERROR)
    return nil
  end
  local nlines = api.nvim_buf_line_count(bufnr)
  first = math.max(1, math.min(first, nlines))
  last = math.max(first, math.min(last, nlines))
  local last_line = api.nvim_buf_get_lines(bufnr, last - 1, last, true)[1]
  local params = {
    uri = name,
    range = {
      start = { line = first - 1, character = 0 },
      ["end"] = { line = last - 1, character = units(last_line, c.offset_encoding or "utf-16") },
    },
    text = text,
    kind = kind,
    replacement = replacement,
  }
  local res, err = client.request("dbcode/comment", params, bufnr)
  if err then
    notify(("dbcode: comment on %s not made: %s"):format(path, err.message or vim.inspect(err)),
      levels.ERROR)
    return nil
  end
  api.nvim_echo({ { ("dbcode: thread %d opened on %s lines %d-%d"):format(res.thread, path,
    first, last) } }, false, {})
  return res
end

--- Who has a file (or, without a path, any file of the workspace) open: one line each.
function M.who_lines(rows, me, now)
  local lines = {}
  for _, r in ipairs(rows) do
    local since = tostring(r.since):gsub("T", " "):sub(1, 19)
    lines[#lines + 1] = ("%s%s  %s  %s mode, since %s UTC (%s)"):format(
      r.agent,
      r.agent == me and " (you)" or "",
      r.path,
      r.mode,
      since,
      blame.age(r.since, now)
    )
  end
  return lines
end

--- vim.notify who has the current file open (`whole`: any file of its workspace); returns the
--- presence rows.
function M.who(bufnr, whole, workspace)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local path
  if not workspace then
    workspace, path = buffer_file(bufnr)
    if not workspace then
      notify("dbcode: not a dbcode buffer: use :Dbcode who WORKSPACE", levels.ERROR)
      return nil
    end
  end
  local params = { workspace = workspace }
  if not whole and path and not uri.is_folder(path) then
    params.path = path
  end
  local rows, err = client.request("dbcode/presence", params)
  if err then
    notify("dbcode: cannot tell who is here: " .. (err.message or vim.inspect(err)), levels.ERROR)
    return nil
  end
  local me = (client.request("dbcode/configure", vim.empty_dict()) or {}).agent
  local where = workspace .. (params.path and ("/" .. params.path) or "")
  local others = vim.tbl_filter(function(r)
    return r.agent ~= me
  end, rows)
  local head = #others == 0 and ("dbcode: nobody else has %s open"):format(where)
    or ("dbcode: %d other%s on %s:"):format(#others, #others == 1 and "" or "s", where)
  local lines = M.who_lines(rows, me)
  notify(head .. (#lines > 0 and ("\n" .. table.concat(lines, "\n")) or ""))
  return rows
end

return M
