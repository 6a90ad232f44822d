-- The dbcode language server for vim.lsp.config / vim.lsp.enable (Neovim 0.11+):
--
--   vim.lsp.config('dbcode', {
--     cmd = { 'dbcode', 'serve' },
--     cmd_env = { DBCODE_DATABASE_URL = 'postgresql://...' },
--     init_options = { agent = 'me', mode = 'save' },
--   })
--   vim.lsp.enable('dbcode')  -- accepted; the plugin attaches dbcode:// buffers itself
--
-- The plugin (plugin/dbcode.lua) reads this config when it starts the server for a dbcode://
-- buffer; options given to require('dbcode').setup{} take precedence.
local config = require("dbcode").default_lsp_config()
-- Only dbcode:// buffers: vim.lsp.enable() must never start the server for other files.
config.root_dir = function(bufnr, on_dir)
  if vim.api.nvim_buf_get_name(bufnr):match("^dbcode://") then
    on_dir(nil)
  end
end
return config
