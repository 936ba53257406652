"""Side-by-side measurements that write BENCHMARKS.md sections (see each module)."""
