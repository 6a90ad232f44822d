; CSS: rule sets named by their selectors; @media / @supports by their query.

(rule_set (selectors) @name) @definition.class
(keyframes_statement (keyframes_name) @name) @definition.function
(media_statement . (_) @name) @definition.namespace
(supports_statement . (_) @name) @definition.namespace
