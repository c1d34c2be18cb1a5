"""P22 / P32: a latent ODE and a latent SDE on irregularly observed electricity demand, with and without solver
regularisation."""
