; Bash definitions. General patterns first: for the same @name node a later pattern wins.

(program (variable_assignment name: (variable_name) @name) @definition.variable)
(program
  (declaration_command (variable_assignment name: (variable_name) @name)) @definition.variable)

(function_definition name: (word) @name) @definition.function
