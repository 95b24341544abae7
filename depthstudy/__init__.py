"""depthstudy: the plain-vs-residual depth study of He et al. 2015, as a command-line tool."""

__version__ = "0.1.0"
