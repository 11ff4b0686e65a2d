"""fastjoint's benchmarks: each script measures, prints a table and writes JSON results."""
