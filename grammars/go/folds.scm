[
  (block)
  (field_declaration_list)
  (interface_type)
  (literal_value)
  (parameter_list)
  (argument_list)
  (expression_switch_statement)
  (type_switch_statement)
  (select_statement)
  (expression_case)
  (type_case)
  (default_case)
  (communication_case)
  (var_declaration)
  (const_declaration)
  (type_declaration)
  (raw_string_literal)
  (import_spec_list)
] @fold

(comment) @fold.comment

(import_declaration) @fold.imports
