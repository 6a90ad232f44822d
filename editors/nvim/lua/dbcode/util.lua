--- Small helpers every module of the plugin uses: notifications and the 0.10/0.11 client API.
local M = {}

M.has_011 = vim.fn.has("nvim-0.11") == 1
M.levels = vim.log.levels

--- vim.notify with the plugin's title; level defaults to INFO.
function M.notify(msg, level)
  vim.notify(msg, level or M.levels.INFO, { title = "dbcode" })
end

--- Call a vim.lsp.Client method: with ':' on 0.11+, with '.' on 0.10.
function M.call(client, method, ...)
  if M.has_011 then
    return client[method](client, ...)
  end
  return client[method](...)
end

return M
