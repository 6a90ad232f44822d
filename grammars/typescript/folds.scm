[
  (statement_block)
  (class_body)
  (interface_body)
  (enum_body)
  (object_type)
  (object)
  (array)
  (object_pattern)
  (array_pattern)
  (formal_parameters)
  (arguments)
  (type_arguments)
  (type_parameters)
  (switch_body)
  (switch_case)
  (switch_default)
  (template_string)
  (parenthesized_expression)
  (named_imports)
  (export_clause)
] @fold

(comment) @fold.comment

(import_statement) @fold.imports
