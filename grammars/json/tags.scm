; JSON: every key, with the kind of its value. General pattern first.

(pair key: (string (string_content) @name)) @definition.key
(pair key: (string (string_content) @name) value: (object)) @definition.object
(pair key: (string (string_content) @name) value: (array)) @definition.array
(pair key: (string (string_content) @name) value: (string)) @definition.string
(pair key: (string (string_content) @name) value: (number)) @definition.number
(pair key: (string (string_content) @name) value: [(true) (false)]) @definition.boolean
(pair key: (string (string_content) @name) value: (null)) @definition.null
