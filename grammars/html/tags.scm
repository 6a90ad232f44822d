; HTML: elements, named by their tag.

(element (start_tag (tag_name) @name)) @definition.field
(script_element (start_tag (tag_name) @name)) @definition.field
(style_element (start_tag (tag_name) @name)) @definition.field
