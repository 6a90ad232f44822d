--- dbcode:// buffers: BufReadCmd fills one from the database (a file, or a folder's listing),
--- BufWriteCmd commits it. There is no file on disk: 'buftype' is acwrite.
local client = require("dbcode.client")
local conflict = require("dbcode.conflict")
local uri = require("dbcode.uri")
local util = require("dbcode.util")

local api = vim.api
local levels = util.levels
local notify = util.notify

local M = {}

local function line_ending(bufnr)
  local ff = vim.bo[bufnr].fileformat
  return ff == "dos" and "\r\n" or ff == "mac" and "\r" or "\n"
end

--- The buffer's text exactly as Neovim's LSP client reports it to the server.
function M.text(bufnr)
  local nl = line_ending(bufnr)
  local text = table.concat(api.nvim_buf_get_lines(bufnr, 0, -1, true), nl)
  if vim.bo[bufnr].eol then
    text = text .. nl
  end
  return text
end

--- Replace the buffer's lines with `text` (not undoable), setting 'fileformat' and 'eol' so that
--- M.text gives `text` back. Returns the number of lines.
function M.set_text(bufnr, text, is_new)
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

--- A folder's listing (dbcode://ws/ or dbcode://ws/dir/): one line per file, <CR> opens it.
local function listing(bufnr, workspace, prefix)
  local files, err = client.request("dbcode/listFiles", { workspace = workspace, prefix = prefix })
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
    local target = uris[api.nvim_win_get_cursor(0)[1]]
    if target then
      vim.cmd.edit(vim.fn.fnameescape(target))
    end
  end, { buffer = bufnr, desc = "dbcode: open the file" })
end

--- BufReadCmd dbcode://*: fill the buffer from the database and attach the client.
function M.read(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local name = api.nvim_buf_get_name(bufnr)
  local workspace, path, seq = uri.parse(name)
  if not workspace then
    notify("dbcode: not a dbcode://<workspace>/<path> URI: " .. name, levels.ERROR)
    return
  end
  if seq and uri.is_folder(path) then
    notify(("dbcode: %s: a workspace at a seq has no listing: open a file of it"):format(name),
      levels.ERROR)
    return
  end
  if uri.is_folder(path) then
    listing(bufnr, workspace, path)
    return
  end
  local canonical = uri.make(workspace, path, seq)
  if canonical ~= name then
    -- The server names documents with percent-encoded segments: use that name, or others'
    -- commits would not find this buffer.
    local other
    for _, b in ipairs(api.nvim_list_bufs()) do
      if b ~= bufnr and api.nvim_buf_get_name(b) == canonical then
        other = b
      end
    end
    if other then
      notify(("dbcode: %s is already open as %s"):format(name, canonical), levels.ERROR)
      return
    end
    api.nvim_buf_set_name(bufnr, canonical)
    name = canonical
  end
  local ok, c = pcall(client.get)
  if not ok then
    notify(tostring(c), levels.ERROR)
    return
  end
  if vim.lsp.buf_is_attached(bufnr, c.id) then -- :edit! reloads: a fresh didOpen
    vim.lsp.buf_detach_client(bufnr, c.id)
  end
  local res, err = client.request("dbcode/readFile", { uri = name }, bufnr)
  local is_new = false
  if err then
    if err.code ~= 404 or seq then
      notify(("dbcode: cannot read %s: %s"):format(name, err.message or vim.inspect(err)),
        levels.ERROR)
      return
    end
    is_new = true
    res = { text = "", revision = 0 }
  end
  vim.bo[bufnr].buftype = "acwrite" -- :write goes through BufWriteCmd, never to the disk
  vim.bo[bufnr].swapfile = false
  if seq then
    vim.bo[bufnr].modifiable = true -- :edit! of a read-only revision: refill it
  end
  local nlines = M.set_text(bufnr, res.text, is_new)
  vim.b[bufnr].dbcode = { workspace = workspace, path = path, revision = res.revision, seq = seq }
  vim.bo[bufnr].modified = false
  if seq or res.readOnly then -- the file as it was: read-only, never kept in step
    vim.bo[bufnr].modifiable = false
    vim.bo[bufnr].readonly = true
  end
  local ft = vim.filetype.match({ filename = path, buf = bufnr })
  if ft then
    api.nvim_buf_call(bufnr, function()
      vim.bo[bufnr].filetype = ft
    end)
  end
  vim.lsp.buf_attach_client(bufnr, c.id)
  local what = is_new and "[New]"
    or ("revision %d%s, %dL, %dB"):format(
      res.revision,
      seq and (" at seq %d, read-only"):format(seq) or "",
      nlines,
      #res.text
    )
  api.nvim_echo({ { ('"%s" %s'):format(name, what) } }, false, {})
end

--- How to ask for code actions: Neovim 0.11+ maps `gra`.
local function code_action_key()
  return util.has_011 and "gra" or ":lua vim.lsp.buf.code_action()"
end

--- Why a buffer with a conflict block is not written, and how to resolve it. `what`: the path
--- (own buffer) or the URI of `:write {uri}`; `tracked`: the server tracks the buffer, so it
--- offers the code actions that resolve a block.
local function conflict_message(what, blocks, tracked)
  local where = ("a conflict block at lines %d-%d"):format(blocks[1].first, blocks[1].last)
  if #blocks > 1 then
    where = ("%d conflict blocks (the first at lines %d-%d)"):format(
      #blocks,
      blocks[1].first,
      blocks[1].last
    )
  end
  local how = tracked
      and ("With the cursor in it, pick a code action (%s): dbcode: Keep mine, Take theirs or "
        .. "Keep both; then :write"):format(code_action_key())
    or "Edit the block by hand (keep the lines you want, delete the marker lines), then :write"
  return ("dbcode: %s not saved: the buffer has %s, and a conflict block is never written to "
    .. "the database, not even by :write!. %s"):format(what, where, how)
end

--- BufWriteCmd dbcode://*: commit the buffer (`dbcode/writeFile`, rebased by the server).
--- `target`: where to write (default: the buffer's own URI); `force`: the command had a `!`.
--- Text with a conflict block is never sent, whatever the target and `force`.
function M.write(bufnr, target, force)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local own_uri = api.nvim_buf_get_name(bufnr)
  target = target or own_uri
  local own = target == own_uri
  local workspace, path, seq = uri.parse(target)
  if not workspace or uri.is_folder(path) then
    notify("dbcode: cannot write to " .. target .. ": not a dbcode://<workspace>/<path> URI",
      levels.ERROR)
    return false
  end
  if seq then
    notify(("dbcode: %s is the file as it was at seq %d: read-only; write to %s instead (:w %s)")
      :format(target, seq, uri.make(workspace, path), uri.make(workspace, path)), levels.ERROR)
    return false
  end
  local blocks = conflict.in_buffer(bufnr)
  if #blocks > 0 then
    local tracked = #vim.lsp.get_clients({ bufnr = bufnr, name = "dbcode" }) > 0
    notify(conflict_message(own and path or target, blocks, tracked), levels.ERROR)
    return false
  end
  local ok, c = pcall(client.get)
  if not ok then
    notify(tostring(c), levels.ERROR)
    return false
  end
  local attached = own and vim.lsp.buf_is_attached(bufnr, c.id)
  local params = { uri = target, text = M.text(bufnr) }
  if not own and not force then
    params.baseRevision = 0 -- like :write {file}: never overwrite an existing file without !
  elseif own and not attached and not force then
    -- The server does not track this buffer (it was restarted): compare-and-swap on the
    -- revision this buffer was read at, never a blind overwrite.
    params.baseRevision = (vim.b[bufnr].dbcode or {}).revision or 0
  end
  local res, err = client.request("dbcode/writeFile", params, bufnr)
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
        .. "conflict is shown in the buffer: resolve it with a code action on it (%s): dbcode: "
        .. "Keep mine, Take theirs or Keep both; then :write again"):format(path, code_action_key())
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
      vim.lsp.buf_attach_client(bufnr, c.id)
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

return M
