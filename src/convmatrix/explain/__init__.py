"""Explanations of a layer's matrix: symbolic entries, neurons, receptive fields and pictures."""
