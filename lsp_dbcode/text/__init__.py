"""Pure text functions: positions and encodings, edits, diffs, 3-way merge.

No I/O and no LSP library here: positions are plain ``(line, character)`` tuples and offsets are
Python ``str`` indices (code points); the server converts to and from lsprotocol types.
"""

from lsp_dbcode.text.diff import diff_edits
from lsp_dbcode.text.edits import (
    Edit,
    apply_change,
    apply_content_change,
    apply_edits,
    content_hash,
    to_lsp_range,
)
from lsp_dbcode.text.merge import Conflict, MergeResult, find_conflicts, merge3, resolve
from lsp_dbcode.text.positions import (
    Encoding,
    LineIndex,
    PositionError,
    char_units,
    codepoint_col_to_units,
    offset_at,
    position_at,
    units_to_codepoint_col,
)

__all__ = [
    "Conflict",
    "Edit",
    "Encoding",
    "LineIndex",
    "MergeResult",
    "PositionError",
    "apply_change",
    "apply_content_change",
    "apply_edits",
    "char_units",
    "codepoint_col_to_units",
    "content_hash",
    "diff_edits",
    "find_conflicts",
    "merge3",
    "offset_at",
    "position_at",
    "resolve",
    "to_lsp_range",
    "units_to_codepoint_col",
]
