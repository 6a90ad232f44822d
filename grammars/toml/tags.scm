; TOML: tables and keys, with the kind of their value. General patterns first.

(table [(bare_key) (dotted_key) (quoted_key)] @name) @definition.object
(table_array_element [(bare_key) (dotted_key) (quoted_key)] @name) @definition.array

(pair [(bare_key) (dotted_key) (quoted_key)] @name) @definition.key
(pair [(bare_key) (dotted_key) (quoted_key)] @name (string)) @definition.string
(pair [(bare_key) (dotted_key) (quoted_key)] @name [(integer) (float)]) @definition.number
(pair [(bare_key) (dotted_key) (quoted_key)] @name (boolean)) @definition.boolean
(pair [(bare_key) (dotted_key) (quoted_key)] @name (array)) @definition.array
(pair [(bare_key) (dotted_key) (quoted_key)] @name (inline_table)) @definition.object
