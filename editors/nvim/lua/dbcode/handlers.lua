--- What the server sends the client: `workspace/applyEdit` (others' commits, conflict blocks),
--- `window/logMessage` (who changed an open file), `dbcode/didCommit` (after subscribe), and the
--- server's exit. Installed by client.default_lsp_config().
local config = require("dbcode.config")
local util = require("dbcode.util")

local api = vim.api
local levels = util.levels

local M = {}

--- The version the server holds for `bufnr`: the one Neovim's last didOpen/didChange carried
--- (vim.lsp.util.buf_versions: the changedtick of the last *text* change, set in Neovim's
--- on_lines; b:changedtick also moves for 'modified' and would never match). Call it after
--- flushing the debounced changes, so that nothing newer is still waiting to be sent.
local function sent_version(bufnr)
  return vim.lsp.util.buf_versions[bufnr] or 0
end

--- Send the didChange Neovim is holding back (its 150 ms debounce) now.
local function flush(client, bufnr)
  local ok, changetracking = pcall(require, "vim.lsp._changetracking")
  if ok then
    pcall(changetracking.flush, client, bufnr)
  end
end

--- workspace/applyEdit. The client declares versioned documentChanges, so each edit names the
--- buffer version the server computed it on. Typing that has not reached the server yet (it
--- waits in the didChange debounce) makes that version stale, and applying the edit would put
--- it at the wrong place: such an edit is refused (applied = false) after flushing the pending
--- didChange, and the server merges again against the buffer as it now knows it. A current
--- edit is applied; a buffer that was unmodified stays unmodified (it still equals the
--- database: the edit is another agent's commit); and the resulting didChange is sent now (the
--- server treats a pushed edit as pending until that didChange arrives). Neovim's own handler
--- would answer applied = true even when it skips a stale edit.
function M.apply_edit(_, params, ctx)
  local client = vim.lsp.get_client_by_id(ctx.client_id)
  if not client or not params or not params.edit then
    return { applied = false, failureReason = "no client or no edit" }
  end
  local edit = params.edit
  local todo = {} --- {bufnr, edits} in order
  for _, change in ipairs(edit.documentChanges or {}) do
    local doc = change.textDocument
    if change.kind or not doc or not change.edits then
      return { applied = false, failureReason = "only text edits are supported" }
    end
    local bufnr = vim.uri_to_bufnr(doc.uri)
    local v = doc.version
    if type(v) == "number" and api.nvim_buf_is_loaded(bufnr) then
      flush(client, bufnr)
      local have = sent_version(bufnr)
      if have ~= v then
        return {
          applied = false,
          failureReason = ("%s is at version %d, the edit is for version %d"):format(
            doc.uri,
            have,
            v
          ),
        }
      end
    end
    todo[#todo + 1] = { bufnr, change.edits }
  end
  for uri, edits in pairs(edit.changes or {}) do -- unversioned: applied as they come
    todo[#todo + 1] = { vim.uri_to_bufnr(uri), edits }
  end
  local was_modified = {}
  for _, t in ipairs(todo) do
    local b = t[1]
    if was_modified[b] == nil then
      was_modified[b] = api.nvim_buf_is_loaded(b) and vim.bo[b].modified
    end
  end
  for _, t in ipairs(todo) do
    local ok, err = pcall(vim.lsp.util.apply_text_edits, t[2], t[1], client.offset_encoding)
    if not ok then
      return { applied = false, failureReason = tostring(err) }
    end
  end
  for b, modified in pairs(was_modified) do
    if api.nvim_buf_is_loaded(b) then
      if not modified then
        vim.bo[b].modified = false
      end
      flush(client, b)
    end
  end
  return { applied = true }
end

--- window/logMessage: Neovim's handler (:LspLog), and a notification when the server tells who
--- changed an open file (option notify_changes).
function M.log_message(err, params, ctx, ...)
  local default = vim.lsp.handlers["window/logMessage"]
  if default then
    default(err, params, ctx, ...)
  end
  if config.get().notify_changes and params and params.message then
    util.notify("dbcode: " .. params.message, levels.INFO)
  end
end

--- dbcode/didCommit (after subscribe): re-emitted as `User DbcodeDidCommit` with the changeset.
function M.did_commit(_, params)
  vim.schedule(function()
    api.nvim_exec_autocmds("User", { pattern = "DbcodeDidCommit", data = params, modeline = false })
  end)
end

--- The server process ended: an error unless it was stopped (SIGTERM), exited cleanly, or
--- ended after refusing the token (that has been said already, saying how to fix it).
function M.on_exit(code, signal)
  if code ~= 0 and signal ~= 15 and not require("dbcode.client").auth_refused then
    vim.schedule(function()
      util.notify(
        ("dbcode: the language server exited (code %s, signal %s): see :LspLog and "
          .. ":checkhealth dbcode"):format(tostring(code), tostring(signal)),
        levels.ERROR
      )
    end)
  end
end

--- The handlers table of the client configuration.
function M.table()
  return {
    ["workspace/applyEdit"] = M.apply_edit,
    ["window/logMessage"] = M.log_message,
    ["dbcode/didCommit"] = M.did_commit,
  }
end

return M
