"""`vaelab tour`: the lecture end to end (it trains its models, computes, writes the report)."""

from vaelab.tour.lecture import run_tour

__all__ = ["run_tour"]
