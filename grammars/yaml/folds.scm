[
  (block_mapping_pair)
  (block_sequence_item)
  (flow_mapping)
  (flow_sequence)
  (block_scalar)
] @fold

(comment) @fold.comment
