"""The conditional VAE (Sohn, Lee & Yan 2015): q(z|x, y) and p(x|z, y).

The label enters encoder and decoder as a one-hot vector, so z is free to hold the style
(slant, thickness) while y says which digit: decode one z under every label to see it.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaelab.errors import VaelabError
from vaelab.models.base import register
from vaelab.models.vae import VAE, VAEConfig


@dataclass
class CVAEConfig(VAEConfig):
    num_classes: int = 10

    def validate(self) -> None:
        super().validate()
        if self.num_classes < 1:
            raise VaelabError("the conditional VAE needs a labelled dataset (num_classes >= 1)")


@register("cvae")
class CVAE(VAE):
    config_class = CVAEConfig
    conditional = True  # the trainer and CLI pass labels; num_classes comes from the data
