"""Built-in text sets: one package's part of the fixture LM's split (``stdlib-train/email``)."""

from __future__ import annotations

import pytest

from slmc.data.texts import is_text_set, load_texts
from slmc.errors import InputError


def test_package_parts_are_text_sets():
    assert is_text_set("stdlib-train/email") and is_text_set("stdlib-heldout/email") and is_text_set("stdlib-heldout")
    assert not is_text_set("stdlib-train/../etc") and not is_text_set("corpus.txt") and not is_text_set("stdlib-sentences-train/x")


def test_package_part_holds_only_that_packages_modules():
    heldout = load_texts("stdlib-heldout/email")
    assert len(heldout) == 3  # email/generator.py, email/header.py, email/parser.py
    assert set(heldout) <= set(load_texts("stdlib-heldout"))
    assert not set(load_texts("stdlib-train/email")) & set(heldout)


def test_unknown_package_is_refused():
    with pytest.raises(InputError, match="no heldout module in package 'nosuchpackage'"):
        load_texts("stdlib-heldout/nosuchpackage")
