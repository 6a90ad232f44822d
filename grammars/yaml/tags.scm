; YAML: mapping keys, with the kind of their value. General patterns first.

(block_mapping_pair key: (flow_node) @name) @definition.key
(block_mapping_pair
  key: (flow_node) @name
  value: (block_node (block_mapping))) @definition.object
(block_mapping_pair
  key: (flow_node) @name
  value: [(block_node (block_sequence)) (flow_node (flow_sequence))]) @definition.array
(block_mapping_pair
  key: (flow_node) @name
  value: (flow_node (flow_mapping))) @definition.object
