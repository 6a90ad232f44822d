-- dbcode.nvim: dbcode:// buffers (BufReadCmd/BufWriteCmd) and :Dbcode. setup() is optional.
if vim.g.loaded_dbcode then
  return
end
vim.g.loaded_dbcode = 1
if vim.fn.has("nvim-0.10") == 0 then
  vim.notify("dbcode.nvim needs Neovim 0.10 or newer", vim.log.levels.WARN)
  return
end
require("dbcode")._define()
