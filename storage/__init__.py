"""Files polydiff writes and reads back: JSON and safetensors with durable writes and checked reads, folders
published atomically, nested training state split into tensors and a JSON tree, and the guards that refuse
pickles and non-finite weights. Nothing here is ever pickled or unpickled. Used by training checkpoints and
by model folders alike, without importing either."""
