; C++ definitions. General patterns first: for the same @name node a later pattern wins.

(translation_unit
  (declaration declarator: (init_declarator declarator: (identifier) @name)) @definition.variable)

(declaration declarator: (function_declarator declarator: (identifier) @name)) @definition.function
(field_declaration
  declarator: (function_declarator declarator: (field_identifier) @name)) @definition.method

(function_definition
  declarator: (function_declarator
    declarator: [(identifier) (qualified_identifier) (operator_name)] @name)) @definition.function
(function_definition
  declarator: (pointer_declarator
    declarator: (function_declarator
      declarator: [(identifier) (qualified_identifier)] @name))) @definition.function
(function_definition
  declarator: (reference_declarator
    (function_declarator declarator: [(identifier) (qualified_identifier)] @name))) @definition.function
(function_definition
  declarator: (function_declarator
    declarator: [(field_identifier) (destructor_name)] @name)) @definition.method

(struct_specifier name: (_) @name body: (field_declaration_list)) @definition.struct
(union_specifier name: (_) @name body: (field_declaration_list)) @definition.struct
(class_specifier name: (_) @name body: (field_declaration_list)) @definition.class
(enum_specifier name: (_) @name body: (enumerator_list)) @definition.enum
(enumerator name: (identifier) @name) @definition.enum_member
(field_declaration declarator: (field_identifier) @name) @definition.field
(namespace_definition name: (_) @name) @definition.namespace
(type_definition declarator: (type_identifier) @name) @definition.type
(alias_declaration name: (type_identifier) @name) @definition.type

(preproc_def name: (identifier) @name) @definition.constant
(preproc_function_def name: (identifier) @name) @definition.macro
