"""Typed configs: Literal fields (a fixed set of values) from files, flags and code, one clear
error naming the field, the value and the choices, and the choices in `vaelab train --help`."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

import pytest

from vaelab.cli import main
from vaelab.config import check_choices, choices, coerce, from_dict, type_name
from vaelab.data import BINARIZATIONS
from vaelab.errors import VaelabError
from vaelab.run import Binarization, DataConfig, TrainConfig

Size = Literal[1, 3]


@dataclass
class Base:
    mode: Literal["fast", "exact"] = "fast"
    size: Size | None = None

    def validate(self) -> None:
        check_choices(self)


@dataclass
class Derived(Base):  # a subclass keeps its base's Literal fields and adds its own
    mode: Literal["fast", "exact", "draft"] = "draft"
    style: Literal["a", "b"] = "a"


def test_a_literal_takes_its_choices_only_of_their_own_type():
    assert coerce("exact", Literal["fast", "exact"]) == "exact"
    assert coerce(3, Size | None) == 3 and coerce(None, Size | None) is None
    for value in ("slow", "FAST", 1, None):
        with pytest.raises(TypeError):
            coerce(value, Literal["fast", "exact"])
    for value in (True, 3.0, "3", 2):  # True == 1 and 3.0 == 3, but neither is the choice
        with pytest.raises(TypeError):
            coerce(value, Size)
    assert type_name(Size | None) == "one of 1, 3 or null"
    assert choices(Size | None) == (1, 3) and choices(int) == ()


def test_an_unknown_choice_is_one_error_naming_field_value_and_choices():
    with pytest.raises(VaelabError) as err:
        from_dict(Derived, {"mode": "slow"}, "train options")
    assert str(err.value) == (
        "train options field 'mode' is 'slow': expected one of fast, exact, draft"
    )
    with pytest.raises(VaelabError, match="field 'size' is 2: expected one of 1, 3 or null"):
        from_dict(Derived, {"size": 2})
    with pytest.raises(VaelabError, match="^style is 'c': expected one of a, b$"):
        Derived(style="c").validate()  # built in code: validate checks the same


def test_a_subclass_takes_its_own_and_its_bases_literal_fields():
    config = from_dict(Derived, {"mode": "draft", "size": 1, "style": "b"})
    assert (config.mode, config.size, config.style) == ("draft", 1, "b")
    with pytest.raises(VaelabError, match="'draft': expected one of fast, exact$"):
        from_dict(Base, {"mode": "draft"})  # the base keeps its own choices


def test_the_run_configs_enums_are_literals():
    assert typing.get_args(Binarization) == ("auto", *BINARIZATIONS)
    with pytest.raises(VaelabError, match="^lr_schedule is 'cosine': expected one of constant, "):
        TrainConfig(lr_schedule="cosine").validate()
    with pytest.raises(VaelabError, match="field 'binarization' is 'otsu': expected one of auto"):
        from_dict(DataConfig, {"binarization": "otsu"})


def test_train_help_lists_the_choices_and_a_bad_flag_is_one_sentence(capsys, tmp_path):
    assert main(["train", "vae", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--lr-schedule {constant,burda}" in help_text
    assert "one of auto, dynamic, static, none" in help_text
    assert main(["train", "vae", "--lr-schedule", "cosine", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == "vaelab: error: --lr-schedule is 'cosine': expected one of constant, burda\n"
    assert not (tmp_path / "r").exists()
