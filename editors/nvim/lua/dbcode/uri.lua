--- dbcode:// URIs: `dbcode://<workspace>/<path>`, each segment percent-encoded (RFC 3986) the
--- way the server names documents (lsp_dbcode/uris.py). Pure functions, no state.
local M = {}

local function encode_segment(s)
  return (s:gsub("[^A-Za-z0-9%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

local function decode(s)
  return (s:gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16))
  end))
end

--- `dbcode://<workspace>/<path>`, each segment percent-encoded (RFC 3986), as the server does;
--- with `seq`, `dbcode://<workspace>@<seq>/<path>`: the file right after changeset seq (read-only).
function M.make(workspace, path, seq)
  local segs = {}
  for _, seg in ipairs(vim.split(path or "", "/", { plain = true })) do
    segs[#segs + 1] = encode_segment(seg)
  end
  local at = seq and ("@" .. string.format("%d", seq)) or ""
  return "dbcode://" .. encode_segment(workspace) .. at .. "/" .. table.concat(segs, "/")
end

--- workspace, path (decoded; path may be "" or end with "/") and seq (a number for a read-only
--- `dbcode://<workspace>@<seq>/<path>`, else nil) of a dbcode:// URI, or nil.
function M.parse(uri)
  local rest = type(uri) == "string" and uri:match("^dbcode://(.*)$")
  if not rest then
    return nil
  end
  local ws, path = rest:match("^([^/]*)/?(.*)$")
  if not ws or ws == "" then
    return nil
  end
  local seq
  local name, at = ws:match("^(.*)@(%d+)$") -- a literal @ (the workspace's own is %40)
  if name and name ~= "" and #at <= 19 then
    ws, seq = name, tonumber(at)
  end
  return decode(ws), decode(path), seq
end

--- True for a URI that names a folder (the workspace root or a path ending in "/").
function M.is_folder(path)
  return path == "" or path:sub(-1) == "/"
end

return M
