[
  (function_definition)
  (compound_statement)
  (subshell)
  (if_statement)
  (elif_clause)
  (else_clause)
  (for_statement)
  (c_style_for_statement)
  (while_statement)
  (case_statement)
  (case_item)
  (heredoc_body)
  (array)
] @fold

(comment) @fold.comment
