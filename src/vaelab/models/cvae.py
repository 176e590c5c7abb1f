"""The conditional VAE (Sohn, Lee & Yan 2015): q(z|x, y) and p(x|z, y).

The label enters encoder and decoder as a one-hot vector, so z is free to hold the style
(slant, thickness) while y says which digit: decode one z under every label to see it.

conditioning = "film" (the default) also feeds the label to every hidden layer as a per-unit
scale and shift (nets.FiLM); "concat" is the classic input-only CVAE. With a 20-D z and the
input-only label, the decoder learns to read the digit's class from z and ignores the label
(conditional samples come out as random digits): README, "The model family".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vaelab.errors import VaelabError
from vaelab.models.base import register
from vaelab.models.vae import VAE, VAEConfig

CONDITIONING = ("film", "concat")


@dataclass
class CVAEConfig(VAEConfig):
    num_classes: int = 10
    conditioning: str = "film"  # or "concat": the label joins only the input layers

    saved_before: ClassVar[dict[str, object]] = {"conditioning": "concat"}

    def validate(self) -> None:
        super().validate()
        if self.num_classes < 1:
            raise VaelabError("the conditional VAE needs a labelled dataset (num_classes >= 1)")
        if self.conditioning not in CONDITIONING:
            raise VaelabError(
                f"model conditioning is {self.conditioning!r}: expected one of "
                + ", ".join(CONDITIONING)
            )


@register("cvae")
class CVAE(VAE):
    config_class = CVAEConfig
    conditional = True  # the trainer and CLI pass labels; num_classes comes from the data

    def film_conditioning(self) -> bool:
        return self.config.conditioning == "film"
