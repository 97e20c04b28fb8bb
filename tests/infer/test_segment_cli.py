"""`lasagna segment`'s reading of its class list (`infer/cli.py`): files as editors write them, bad files named."""

from types import SimpleNamespace

import pytest

from lasagna.infer.cli import read_classes


def _from_file(path):
    return read_classes(SimpleNamespace(classes=None, classes_file=str(path)))


def test_a_classes_file_with_a_bom_crlf_comments_and_blank_lines(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes("\ufeff# mine\r\nsky\r\n\r\n  red circle  \r\n# more\r\ngrass\r\n".encode())
    assert _from_file(path) == ["sky", "red circle", "grass"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"), "not UTF-8 text"),
    ],
)
def test_a_classes_file_that_is_no_text_file_is_named(tmp_path, make, message):
    path = tmp_path / "classes.txt"
    make(path)
    with pytest.raises(ValueError, match=message) as info:
        _from_file(path)
    assert str(path) in str(info.value)
