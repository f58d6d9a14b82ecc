"""The paper's two-layer system: batched FA/BP engine, data, and convergence theory."""
