"""Neural differential equations: solver-heuristic regularisers (P32) and multiplicative diffusion (P4)."""
