--- Conflict blocks in a buffer, found exactly as the server finds them (lsp_dbcode/text/merge.py
--- find_conflicts): marker lines of 7 `<`, `|`, `=` or `>` alone or followed by a space or a tab;
--- a block is `<<<<<<<` ... [`|||||||` ...] `=======` ... `>>>>>>>`; incomplete blocks do not
--- count. The product's rule: a conflict block never reaches the database.
local M = {}

local MARKER_SIZE = 7

--- The marker kind ("<", "|", "=", ">") of one line, or nil.
local function marker(line)
  local c = line:sub(1, 1)
  if c ~= "<" and c ~= "|" and c ~= "=" and c ~= ">" then
    return nil
  end
  if line:sub(1, MARKER_SIZE) ~= c:rep(MARKER_SIZE) then
    return nil
  end
  local after = line:sub(MARKER_SIZE + 1, MARKER_SIZE + 1)
  if after == "" or after == " " or after == "\t" then
    return c
  end
  return nil
end

--- The complete conflict blocks among `lines` (a list of strings without line breaks; a lone
--- "\r" inside one breaks it, as it does for the server): a list of {first, last}, 1-based
--- line numbers of the opening and closing marker lines.
function M.find(lines)
  local blocks = {}
  local state, first = "outside", nil
  for lnum, line in ipairs(lines) do
    for part in (line .. "\r"):gmatch("([^\r]*)\r") do
      local kind = marker(part)
      if kind == "<" then
        state, first = "ours", lnum
      elseif kind == "|" and state == "ours" then
        state = "base"
      elseif kind == "=" and (state == "ours" or state == "base") then
        state = "theirs"
      elseif kind == ">" and state == "theirs" then
        state = "outside"
        blocks[#blocks + 1] = { first = first, last = lnum }
      end
    end
  end
  return blocks
end

--- The conflict blocks of a buffer (see find).
function M.in_buffer(bufnr)
  return M.find(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false))
end

return M
