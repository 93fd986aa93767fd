"""Passwords in source URLs are masked, and only the environment can bring them back."""

from __future__ import annotations

import logging

import pytest

from poolcast import secrets
from poolcast.errors import SourceError


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://ana:s3cret@db:5432/sales", "postgresql://ana:***@db:5432/sales"),
        (
            "postgresql+psycopg://ana:p%40ss@db/sales?sslmode=require#t",
            "postgresql+psycopg://ana:***@db/sales?sslmode=require#t",
        ),
        (
            "postgresql://ana@db/sales?password=s3cret&x=1",
            "postgresql://ana@db/sales?password=***&x=1",
        ),
        ("sqlite:////tmp/x.db?PWD=s3cret#sales", "sqlite:////tmp/x.db?PWD=***#sales"),
        ("https://host/x?token=abc&api_key=def", "https://host/x?token=***&api_key=***"),
        (
            "cannot connect to mysql://u:pw@h/db: refused",
            "cannot connect to mysql://u:***@h/db: refused",
        ),
    ],
)
def test_secrets_are_masked_wherever_they_sit(url, masked):
    assert secrets.mask(url) == masked
    assert secrets.has_secret(url)
    assert not secrets.has_secret(masked)


@pytest.mark.parametrize(
    "text", ["data/sales.csv", "sqlite:////tmp/x.db#sales", "postgresql://ana@db/sales", "a:b@c"]
)
def test_text_without_secrets_is_unchanged(text):
    assert secrets.mask(text) == text


def test_reveal_takes_the_full_url_from_the_environment_only_when_it_matches():
    full = "postgresql://ana:s3cret@db/sales#t"
    masked, clear = secrets.split(full)
    assert (masked, clear) == ("postgresql://ana:***@db/sales#t", full)
    assert secrets.reveal(masked, {secrets.SOURCE_URL_ENV: full}) == full
    assert secrets.reveal("data/sales.csv", {}) == "data/sales.csv"
    with pytest.raises(SourceError, match=r"POOLCAST_SOURCE_URL cannot supply it .it is not set"):
        secrets.reveal(masked, {})
    other = "postgresql://bob:x@db/sales#t"
    with pytest.raises(SourceError, match="masks to a different URL"):
        secrets.reveal(masked, {secrets.SOURCE_URL_ENV: other})


def test_log_filter_masks_formatted_messages():
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "loading %s", ("mysql://u:pw@h/d",), None
    )
    assert secrets.SecretFilter().filter(record)
    assert record.getMessage() == "loading mysql://u:***@h/d"
