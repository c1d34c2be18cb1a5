"""P22 / P32: a latent ODE on irregularly observed electricity demand, with and without solver regularisation."""
