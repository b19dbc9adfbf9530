"""parse_bytes: sizes like '512MB' for byte budgets (checked against the units' definitions)."""

import pytest

from convmatrix.geometry import parse_bytes


@pytest.mark.parametrize("text, expected", [
    ("512MB", 512 * 10**6), ("1GB", 10**9), ("1 gb", 10**9), ("1.5GB", 1_500_000_000), ("100", 100),
    ("100B", 100), ("2kB", 2000), ("64MiB", 64 * 2**20), ("1GiB", 2**30), ("1e9", 10**9), (4096, 4096), (0, 0),
])
def test_sizes(text, expected):
    assert parse_bytes(text) == expected


def test_not_a_size():
    with pytest.raises(ValueError, match="block_bytes must be a number of bytes with an optional unit .* got '5 XB'"):
        parse_bytes("5 XB", "block_bytes")


def test_negative():
    with pytest.raises(ValueError, match="size must not be negative, got '-1MB'"):
        parse_bytes("-1MB")


def test_wrong_type():
    with pytest.raises(TypeError, match=r"size must be an int number of bytes or a string like '512MB', got 1.5 \(float\)"):
        parse_bytes(1.5)
    with pytest.raises(TypeError, match="got True"):
        parse_bytes(True)
