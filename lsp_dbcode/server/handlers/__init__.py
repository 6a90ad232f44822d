"""The handlers, one module per family: flat functions of (session, params).

- lifecycle.py: initialize, initialized, exit;
- text_sync.py: didOpen, didChange, didClose, didSave;
- dbcode.py: the ``dbcode/*`` requests (plain JSON in and out);
- review.py: review threads, claims and presence (``dbcode/comment`` & co., plain JSON), the
  Resolve command and the code actions on review diagnostics;
- language.py: code actions, formatting, symbols, folding, diagnostics pulls, content.

Which handler takes which method, and how it runs, is server/routes.py.
"""
