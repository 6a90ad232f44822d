[
  (statement_block)
  (class_body)
  (object)
  (array)
  (object_pattern)
  (array_pattern)
  (formal_parameters)
  (arguments)
  (switch_body)
  (switch_case)
  (switch_default)
  (template_string)
  (parenthesized_expression)
  (jsx_element)
  (jsx_self_closing_element)
  (named_imports)
  (export_clause)
] @fold

(comment) @fold.comment

(import_statement) @fold.imports
