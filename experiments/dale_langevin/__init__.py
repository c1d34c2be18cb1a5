"""Dale meets Langevin (P4): multiplicative denoising diffusion with geometric Brownian motion, against additive
VE and VP diffusion. `python -m experiments.dale_langevin [--quick]`."""
