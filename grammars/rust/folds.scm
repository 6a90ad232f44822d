[
  (block)
  (declaration_list)
  (field_declaration_list)
  (ordered_field_declaration_list)
  (enum_variant_list)
  (match_block)
  (use_list)
  (parameters)
  (arguments)
  (token_tree)
  (array_expression)
  (tuple_expression)
  (struct_expression)
  (field_initializer_list)
  (closure_expression)
  (string_literal)
  (raw_string_literal)
] @fold

[(line_comment) (block_comment)] @fold.comment

[(use_declaration) (extern_crate_declaration)] @fold.imports
