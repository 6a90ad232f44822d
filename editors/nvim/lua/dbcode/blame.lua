--- :Dbcode blame: who last changed each run of lines of a dbcode:// buffer (`dbcode/blame`), as
--- virtual text at the end of the run's first line: agent, seq, age, message. Toggled per buffer.
local client = require("dbcode.client")
local uri = require("dbcode.uri")
local util = require("dbcode.util")

local api = vim.api
local levels = util.levels
local notify = util.notify

local M = {}

M.ns = api.nvim_create_namespace("dbcode.blame")
M.message_chars_max = 60 --- characters of a changeset's message shown after the age

local shown = {} --- bufnr -> true while the blame is shown

--- Seconds since the epoch of an ISO 8601 time with an offset ("2026-12-08T00:14:31.5+00:00").
function M.epoch(iso)
  local y, mo, d, h, mi, s, rest = tostring(iso):match("^(%d+)-(%d+)-(%d+)[T ](%d+):(%d+):(%d+)(.*)$")
  if not y then
    return nil
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  -- days from 1970-01-01 to the civil date (H. Hinnant's algorithm), independent of the TZ
  local yy = mo <= 2 and y - 1 or y
  local era = math.floor(yy / 400)
  local yoe = yy - era * 400
  local doy = math.floor((153 * (mo + (mo > 2 and -3 or 9)) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  local t = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
  local sign, oh, om = rest:match("([+-])(%d%d):?(%d%d)$")
  if sign then
    local off = tonumber(oh) * 3600 + tonumber(om) * 60
    t = sign == "+" and t - off or t + off
  end
  return t
end

--- "just now", "5 min ago", "3 h ago", "2 days ago" for an ISO time (the time itself if unreadable).
function M.age(iso, now)
  local t = M.epoch(iso)
  if not t then
    return tostring(iso)
  end
  local dt = math.max(0, (now or os.time()) - t)
  if dt < 60 then
    return "just now"
  elseif dt < 3600 then
    return ("%d min ago"):format(math.floor(dt / 60))
  elseif dt < 86400 then
    return ("%d h ago"):format(math.floor(dt / 3600))
  elseif dt < 86400 * 60 then
    return ("%d days ago"):format(math.floor(dt / 86400))
  end
  return tostring(iso):sub(1, 10)
end

--- The virtual text of one run: "agent · seq N · age · message".
function M.label(run, now)
  local parts = { run.agent, ("seq %d"):format(run.seq), M.age(run.time, now) }
  local msg = run.message
  if msg ~= nil and msg ~= vim.NIL and msg ~= "" then
    msg = msg:gsub("\n.*", "")
    if vim.fn.strchars(msg) > M.message_chars_max then
      msg = vim.fn.strcharpart(msg, 0, M.message_chars_max - 1) .. "…"
    end
    parts[#parts + 1] = msg
  end
  return table.concat(parts, " · ")
end

--- Remove the blame from a buffer.
function M.clear(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
  shown[bufnr] = nil
end

--- Show the blame of a dbcode:// buffer (of the revision it was read at); returns the runs.
function M.show(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local name = api.nvim_buf_get_name(bufnr)
  local workspace, path = uri.parse(name)
  if not workspace or uri.is_folder(path) then
    notify("dbcode: blame needs a dbcode://<workspace>/<path> buffer, not " .. name, levels.ERROR)
    return nil
  end
  local runs, err = client.request("dbcode/blame", { uri = name }, bufnr)
  if err then
    notify("dbcode: cannot blame " .. path .. ": " .. (err.message or vim.inspect(err)),
      levels.ERROR)
    return nil
  end
  api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  local nlines = api.nvim_buf_line_count(bufnr)
  local now = os.time()
  for _, run in ipairs(runs) do
    local line = math.min(run.startLine, nlines - 1)
    api.nvim_buf_set_extmark(bufnr, M.ns, line, 0, {
      virt_text = { { "  " .. M.label(run, now), "Comment" } },
      virt_text_pos = "eol",
      hl_mode = "combine",
    })
  end
  shown[bufnr] = true
  api.nvim_create_autocmd("BufWipeout", {
    buffer = bufnr,
    once = true,
    callback = function()
      shown[bufnr] = nil
    end,
  })
  if vim.bo[bufnr].modified then
    notify("dbcode: blame of the stored revision: unsaved edits are not in it", levels.WARN)
  end
  return runs
end

--- Show the blame, or hide it if it is shown; returns true when it is now shown.
function M.toggle(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if shown[bufnr] then
    M.clear(bufnr)
    return false
  end
  return M.show(bufnr) ~= nil
end

return M
