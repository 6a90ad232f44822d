"""lsp-dbcode: a codebase in PostgreSQL, served over the Language Server Protocol."""

__version__ = "0.1.0"
