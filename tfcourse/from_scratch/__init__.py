"""The mechanics the fundamentals lesson writes from their equations: optimizers, batch norm, losses.

Each is checked against its Keras counterpart (tests/from_scratch/); the lesson reports the
largest difference. They exist to be read: in real work use the Keras classes.
"""
