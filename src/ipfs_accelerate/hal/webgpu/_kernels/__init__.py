"""WGSL kernel generators, one module per op family (element-wise, layout, reductions,
matrix products, neural-network ops). Generators return WGSL source; the backend compiles
each distinct source once."""
