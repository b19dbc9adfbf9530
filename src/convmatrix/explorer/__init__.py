"""The interactive explorer: a conv layer as a fully connected layer, neuron by neuron.

``convmatrix explore`` serves it (Starlette + uvicorn, extra ``web``) or writes one
self-contained page; :func:`explore` gives the same in Python and Jupyter. Every number
on the page comes from :mod:`convmatrix.explorer.data`, which asks the core's tap pattern.
"""

from .session import Explorer, Running, explore

__all__ = ["Explorer", "Running", "explore"]
