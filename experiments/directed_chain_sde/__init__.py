"""Directed chain SDE (P31) against a neural SDE trained as a GAN and a latent SDE (P22): generators of simulated
mean-field paths and of real series, scored by signature MMD, discriminative and predictive scores and marginals."""
