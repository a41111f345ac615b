"""Drafters: training-free guessers of what the model will say next."""
