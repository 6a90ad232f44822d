--- What the server sends the client: `workspace/applyEdit` (others' commits, conflict blocks),
--- `window/logMessage` (who changed an open file), `dbcode/didCommit` (after subscribe), and the
--- server's exit. Installed by client.default_lsp_config().
local config = require("dbcode.config")
local util = require("dbcode.util")

local api = vim.api
local levels = util.levels

local M = {}

--- workspace/applyEdit. Like Neovim's handler, but an edit made for an older buffer version is
--- refused (so the server merges again at once), a buffer that was unmodified stays unmodified
--- (it still equals the database: the edit is another agent's commit), and the resulting
--- didChange is sent now (Neovim answers applied=true and sends its didChange 150 ms later).
function M.apply_edit(_, params, ctx)
  local client = vim.lsp.get_client_by_id(ctx.client_id)
  if not client or not params or not params.edit then
    return { applied = false, failureReason = "no client or no edit" }
  end
  local edit = params.edit
  local bufs = {}
  for _, change in ipairs(edit.documentChanges or {}) do
    local doc = change.textDocument
    if doc and change.edits then
      local bufnr = vim.uri_to_bufnr(doc.uri)
      local v = doc.version
      local have = vim.lsp.util.buf_versions[bufnr] or 0
      if type(v) == "number" and v > 0 and api.nvim_buf_is_loaded(bufnr) and have > v then
        return {
          applied = false,
          failureReason = ("buffer %s is at version %d, the edit is for version %d"):format(
            doc.uri,
            have,
            v
          ),
        }
      end
      bufs[bufnr] = true
    end
  end
  for uri in pairs(edit.changes or {}) do
    bufs[vim.uri_to_bufnr(uri)] = true
  end
  local was_modified = {}
  for b in pairs(bufs) do
    was_modified[b] = api.nvim_buf_is_loaded(b) and vim.bo[b].modified
  end
  local ok, err = pcall(vim.lsp.util.apply_workspace_edit, edit, client.offset_encoding)
  if not ok then
    return { applied = false, failureReason = tostring(err) }
  end
  local ct_ok, changetracking = pcall(require, "vim.lsp._changetracking")
  for b in pairs(bufs) do
    if api.nvim_buf_is_loaded(b) then
      if not was_modified[b] then
        vim.bo[b].modified = false
      end
      if ct_ok then
        pcall(changetracking.flush, client, b)
      end
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

--- The server process ended: an error unless it was stopped (SIGTERM) or exited cleanly.
function M.on_exit(code, signal)
  if code ~= 0 and signal ~= 15 then
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
