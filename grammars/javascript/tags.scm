; JavaScript definitions. General patterns first: for the same @name node a later pattern wins.

(program
  [
    (lexical_declaration (variable_declarator name: (identifier) @name) @definition.variable)
    (variable_declaration (variable_declarator name: (identifier) @name) @definition.variable)
    (export_statement
      declaration: [
        (lexical_declaration (variable_declarator name: (identifier) @name) @definition.variable)
        (variable_declaration (variable_declarator name: (identifier) @name) @definition.variable)
      ])
  ])

(program
  [
    (lexical_declaration
      "const" (variable_declarator name: (identifier) @name) @definition.constant)
    (export_statement
      declaration: (lexical_declaration
        "const" (variable_declarator name: (identifier) @name) @definition.constant))
  ])

(function_declaration name: (identifier) @name) @definition.function
(generator_function_declaration name: (identifier) @name) @definition.function
(function_expression name: (identifier) @name) @definition.function

(variable_declarator
  name: (identifier) @name
  value: [(arrow_function) (function_expression) (generator_function)]) @definition.function

(assignment_expression
  left: (member_expression property: (property_identifier) @name)
  right: [(arrow_function) (function_expression)]) @definition.function

(pair
  key: (property_identifier) @name
  value: [(arrow_function) (function_expression)]) @definition.function

(class_declaration name: (identifier) @name) @definition.class
(class name: (identifier) @name) @definition.class
(variable_declarator name: (identifier) @name value: (class)) @definition.class

(field_definition
  property: [(property_identifier) (private_property_identifier)] @name) @definition.field

(method_definition
  name: [(property_identifier) (private_property_identifier)] @name) @definition.method

(method_definition
  name: (property_identifier) @name
  (#eq? @name "constructor")) @definition.constructor
