"""P32: regularising the error and stiffness estimates of a neural ODE classifier's solver (MNIST)."""
