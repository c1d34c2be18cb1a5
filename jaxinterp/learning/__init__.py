"""Learning rules as composable training procedures: each is an optax gradient transformation or a training step
with a documented signature, written for pure models so it applies to any model of the zoo.
"""
