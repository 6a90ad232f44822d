[
  (compound_statement)
  (field_declaration_list)
  (declaration_list)
  (enumerator_list)
  (initializer_list)
  (parameter_list)
  (argument_list)
  (template_parameter_list)
  (case_statement)
  (lambda_expression)
  (preproc_if)
  (preproc_ifdef)
  (preproc_else)
  (preproc_elif)
  (preproc_function_def)
  (raw_string_literal)
] @fold

(comment) @fold.comment

[(preproc_include) (using_declaration)] @fold.imports
