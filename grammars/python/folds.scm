[
  (function_definition)
  (class_definition)
  (decorated_definition)
  (for_statement)
  (while_statement)
  (with_statement)
  (match_statement)
  (case_clause)
  (else_clause)
  (except_clause)
  (finally_clause)
  (parameters)
  (argument_list)
  (parenthesized_expression)
  (generator_expression)
  (list_comprehension)
  (set_comprehension)
  (dictionary_comprehension)
  (tuple)
  (list)
  (set)
  (dictionary)
  (string)
] @fold

; `if`, `elif` and `try` fold their own block, not the clauses after it.
(if_statement consequence: (block) @end) @fold
(elif_clause consequence: (block) @end) @fold
(try_statement body: (block) @end) @fold

(comment) @fold.comment

[
  (import_statement)
  (import_from_statement)
  (future_import_statement)
] @fold.imports
