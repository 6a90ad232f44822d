; Go definitions. General patterns first: for the same @name node a later pattern wins.

(package_clause (package_identifier) @name) @definition.package

(source_file
  (var_declaration [
    (var_spec name: (identifier) @name) @definition.variable
    (var_spec_list (var_spec name: (identifier) @name) @definition.variable)
  ]))

(source_file
  (const_declaration (const_spec name: (identifier) @name) @definition.constant))

(function_declaration name: (identifier) @name) @definition.function
(method_declaration name: (field_identifier) @name) @definition.method

(type_spec name: (type_identifier) @name) @definition.type
(type_alias name: (type_identifier) @name) @definition.type
(type_spec name: (type_identifier) @name type: (struct_type)) @definition.struct
(type_spec name: (type_identifier) @name type: (interface_type)) @definition.interface

(field_declaration name: (field_identifier) @name) @definition.field
(method_elem name: (field_identifier) @name) @definition.method
