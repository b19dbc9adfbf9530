"""Analysis of layers and networks: singular values, spectral norms and Lipschitz bounds."""
