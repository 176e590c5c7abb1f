"""vaelab: latent-variable generative models of images you can train, measure and see."""

from vaelab.errors import VaelabError

__version__ = "0.1.0"
__all__ = ["VaelabError", "__version__"]
