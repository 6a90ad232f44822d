[
  (class_body)
  (interface_body)
  (enum_body)
  (annotation_type_body)
  (constructor_body)
  (block)
  (switch_block)
  (switch_block_statement_group)
  (array_initializer)
  (formal_parameters)
  (argument_list)
  (string_literal)
] @fold

[(line_comment) (block_comment)] @fold.comment

(import_declaration) @fold.imports
