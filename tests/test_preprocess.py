"""The one image converter: the same RGB for paths, PIL images and arrays; hostile inputs refused by name; CLIP and
SAM sizes exactly as the released model's preprocessing computes them."""

from __future__ import annotations

import io
import math
import pickle
import re
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lasagna.config import PreprocessConfig
from lasagna.preprocess import (
    MAX_SIDE,
    ImageInputError,
    ImageTooLargeError,
    check_image,
    clip_pixels,
    clip_resize_shape,
    prepare,
    sam_pixels,
    sam_resize_shape,
    to_rgb,
)

SIDES = st.integers(1, 3000)


def _exact_clip_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """transformers 4.31's rule in exact rationals: short side -> size, long side floor(size * long / short)."""
    new_long = math.floor(Fraction(size * max(h, w), min(h, w)))
    return (size, new_long) if h <= w else (new_long, size)


def _saved(array: np.ndarray, path, fmt: str = "PNG", **save):
    Image.fromarray(array).save(path, format=fmt, **save)
    return path


# ---------------------------------------------------------------- CLIP and SAM sizes

# (h, w, clip_size) -> (h', w'); each row is floor(size * long / short) worked out by hand
CLIP_SIZES = [
    (480, 640, 224, (224, 298)),  # 298.67: rounding gave 299
    (427, 711, 224, (224, 372)),  # 372.98: rounding gave 373
    (640, 480, 224, (298, 224)),
    (107, 214, 224, (224, 448)),  # an exact multiple: the float shortcut int(w * (224 / h)) gives 447
    (224, 300, 224, (224, 300)),  # short side already at size: the long side is kept
    (500, 500, 224, (224, 224)),
    (1, 1, 224, (224, 224)),
    (1, 20000, 128, (128, 2_560_000)),
    (20000, 1, 128, (2_560_000, 128)),
    (480, 640, 128, (128, 170)),  # 170.67
    (3, 1000, 224, (224, 74666)),
]


@pytest.mark.parametrize(("h", "w", "size", "expected"), CLIP_SIZES)
def test_clip_resize_shape_table(h, w, size, expected):
    assert _exact_clip_shape(h, w, size) == expected  # the table itself follows the rule
    assert clip_resize_shape(h, w, size) == expected


@settings(max_examples=300, deadline=None)
@given(h=SIDES, w=SIDES, size=st.sampled_from([128, 224, 336]))
def test_clip_resize_shape_is_the_4_31_rule(h, w, size):
    new = clip_resize_shape(h, w, size)
    assert new == _exact_clip_shape(h, w, size)
    short, long = min(h, w), max(h, w)
    assert max(new) == int(size * long / short)  # 4.31's float expression, multiplication before division
    assert min(new) == size


# (h, w, sam_size) -> (h', w') = (int(h * s + 0.5), int(w * s + 0.5)), s = size / max(h, w)
SAM_SIZES = [
    (480, 640, 1024, (768, 1024)),
    (427, 711, 1024, (615, 1024)),  # 614.98: to the nearest, half up
    (1000, 1000, 1024, (1024, 1024)),
    (1, 20000, 1024, (1, 1024)),  # 0.0512 + 0.5 truncates to 0: kept at 1 px
    (20000, 1, 128, (128, 1)),
    (3, 5, 128, (77, 128)),  # 76.8
]


@pytest.mark.parametrize(("h", "w", "size", "expected"), SAM_SIZES)
def test_sam_resize_shape_table(h, w, size, expected):
    assert sam_resize_shape(h, w, size) == expected


@settings(max_examples=300, deadline=None)
@given(h=SIDES, w=SIDES, size=st.sampled_from([128, 1024]))
def test_sam_resize_shape_keeps_every_side(h, w, size):
    new_h, new_w = sam_resize_shape(h, w, size)
    scale = size / max(h, w)
    assert (new_h, new_w) == (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
    assert max(new_h, new_w) == size and min(new_h, new_w) >= 1


def _reference_clip(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """4.31's processor on a uint8 RGB array, step by step: resize, crop at (new - size) // 2, rescale, normalise."""
    size = cfg.clip_size
    new_h, new_w = _exact_clip_shape(*image.shape[:2], size)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = (resized[top : top + size, left : left + size] * (1 / 255)).astype(np.float32)
    return ((x - np.array(cfg.clip_mean, np.float32)) / np.array(cfg.clip_std, np.float32)).transpose(2, 0, 1)


@pytest.mark.parametrize("shape", [(480, 640), (427, 711), (711, 427), (224, 224), (5, 9), (230, 227)])
def test_clip_pixels_match_the_released_processor(shape):
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    cfg = PreprocessConfig()
    got = clip_pixels(image, cfg)
    assert got.dtype == torch.float32 and got.shape == (3, 224, 224)
    np.testing.assert_array_equal(got.numpy(), _reference_clip(image, cfg))


@pytest.mark.parametrize("shape", [(1, 1100), (5, 7000), (2, 3000), (3000, 2)])
def test_extreme_ratios_resize_only_what_is_kept(shape):
    """Past 2**24 resized pixels the long axis is resized and cropped first: exact for wide images; tall ones too
    on smooth content (the order of Pillow's two passes only matters where the first overshoots)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx * 7 + yy) % 256], -1).astype(np.uint8)
    cfg = PreprocessConfig(clip_size=128)
    assert math.prod(clip_resize_shape(h, w, 128)) > 2**24
    np.testing.assert_array_equal(clip_pixels(image, cfg).numpy(), _reference_clip(image, cfg))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400))
def test_encoder_pixels_for_any_size(h, w):
    cfg = PreprocessConfig(clip_size=32, sam_size=64)
    image = np.full((h, w, 3), 200, np.uint8)
    clip = clip_pixels(image, cfg)
    assert clip.shape == (3, 32, 32) and torch.isfinite(clip).all()
    sam, (new_h, new_w) = sam_pixels(image, cfg)
    assert sam.shape == (3, 64, 64) and 1 <= new_h <= 64 and 1 <= new_w <= 64
    inside = (200 - torch.tensor(cfg.sam_mean)) / torch.tensor(cfg.sam_std)
    torch.testing.assert_close(sam[:, :new_h, :new_w], inside[:, None, None].expand(3, new_h, new_w))
    assert not sam[:, new_h:].any() and not sam[:, :, new_w:].any()  # zero padding bottom and right


@pytest.fixture(scope="module")
def embedded():
    from lasagna import Lasagna

    return Lasagna.from_pretrained()


@pytest.mark.parametrize("shape", [(1, 20000), (20000, 1)])
def test_extreme_ratios_segment_on_the_embedded_model(embedded, shape):
    image = np.zeros((*shape, 3), np.uint8)
    image[..., 0] = 220
    pred = embedded.segment(image, classes=["red circle", "blue square"])
    assert pred.image_size == shape and [c.name for c in pred.classes] == ["red circle", "blue square"]
    assert all(m.shape == shape for m in pred.masks)
    # The mask path itself, whatever the answers: SAM's resized frame is cropped back and sized to the image.
    enc, resized, original = embedded.engine.encode_image(image)
    assert original == shape and min(resized) == 1
    width = embedded.model.text_projector[0].in_features
    low = embedded.engine.slot_low_res(enc, [torch.zeros(width), torch.ones(width)])
    masks = embedded.model.sam.postprocess(torch.full_like(low, 3.0), resized, original)
    assert masks.shape == (2, *shape) and bool((masks > 0).all())


# ---------------------------------------------------------------- one set of rules for three kinds


@settings(max_examples=20, deadline=None)
@given(
    data=st.data(),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    channels=st.sampled_from([None, 3, 4]),
)
def test_paths_pil_and_arrays_give_the_same_rgb(tmp_path_factory, data, h, w, channels):
    shape = (h, w) if channels is None else (h, w, channels)
    values = data.draw(st.binary(min_size=math.prod(shape), max_size=math.prod(shape)))
    array = np.frombuffer(values, np.uint8).reshape(shape)
    path = _saved(array, tmp_path_factory.mktemp("same") / "image.png")
    expected = to_rgb(array)
    assert expected.shape == (h, w, 3) and expected.dtype == np.uint8
    np.testing.assert_array_equal(expected, np.atleast_3d(array)[..., :3] if channels else np.dstack([array] * 3))
    np.testing.assert_array_equal(to_rgb(Image.fromarray(array)), expected)
    np.testing.assert_array_equal(to_rgb(path), expected)
    np.testing.assert_array_equal(to_rgb(str(path)), expected)


def test_deep_modes_follow_the_array_rules(tmp_path):
    sixteen = np.array([[0, 128, 129, 65535]], np.uint16)
    eight = [0, 0, 1, 255]  # round(v / 257)
    for image in [sixteen, Image.fromarray(sixteen), _saved(sixteen, tmp_path / "d.png")]:
        assert to_rgb(image)[0, :, 0].tolist() == eight
    pgm = tmp_path / "d.pgm"  # Pillow opens 16-bit PGM as 32-bit mode I
    pgm.write_bytes(b"P5\n4 1\n65535\n" + sixteen.astype(">u2").tobytes())
    assert Image.open(pgm).mode == "I"
    assert to_rgb(pgm)[0, :, 0].tolist() == eight
    wide = np.array([[0, 7, 255]], np.int32)  # mode I and int arrays: 8-bit values
    for image in [wide, wide.astype(np.int64), Image.fromarray(wide), _saved(wide, tmp_path / "i.tif", "TIFF")]:
        assert to_rgb(image)[0, :, 1].tolist() == [0, 7, 255]
    floats = np.array([[0.0, 0.5, 1.0]], np.float32)  # mode F and float arrays: [0, 1]
    tiff = _saved(floats, tmp_path / "f.tif", "TIFF")
    for image in [floats, floats.astype(np.float64), Image.fromarray(floats), tiff]:
        assert to_rgb(image)[0, :, 2].tolist() == [0, 128, 255]
    bits = np.array([[True, False]])  # bool and mode 1: bilevel
    for image in [bits, Image.fromarray(bits), _saved(bits, tmp_path / "b.png")]:
        assert to_rgb(image)[0, :, 0].tolist() == [255, 0]


def test_colour_modes_are_decoded_by_pillow(tmp_path):
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), mode="L").convert("P")
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(tmp_path / "p.png")
    for image in [palette, tmp_path / "p.png"]:
        assert to_rgb(image)[0].tolist() == [[0, 0, 0], [10, 20, 30]]
    assert to_rgb(Image.new("LA", (2, 1), (9, 0)))[0, 0].tolist() == [9, 9, 9]
    assert to_rgb(Image.new("CMYK", (2, 1), (0, 0, 0, 0)))[0, 0].tolist() == [255, 255, 255]
    rgba = np.array([[[1, 2, 3, 0]]], np.uint8)  # alpha dropped, the colour under it kept
    assert to_rgb(rgba)[0, 0].tolist() == to_rgb(Image.fromarray(rgba))[0, 0].tolist() == [1, 2, 3]
    with pytest.raises(ImageInputError, match="mode La"):
        to_rgb(Image.new("La", (2, 1)))


# ---------------------------------------------------------------- hostile inputs


@pytest.mark.parametrize("shape", [(4, 5, 2), (4, 5, 5), (20,), (2, 4, 5, 3), (4, 5, 0)])
def test_wrong_shapes_are_refused_with_the_shape(shape):
    with pytest.raises(ImageInputError, match=re.escape(f"shape {shape}")):
        to_rgb(np.zeros(shape, np.uint8))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[0, 300]], np.int32), "int32 values span 0..300, outside 0..255"),
        (np.array([[-1, 3]], np.int64), "int64 values span -1..3"),
        (np.array([[0, 2**32 - 1]], np.uint32), "outside 0..255"),
        (np.array([[0.0, 200.0]], np.float32), r"\[0, 1\].*spans \[0, 200\] \(divide 8-bit values by 255\)"),
        (np.array([[-0.5, 0.5]]), r"spans \[-0.5, 0.5\]"),
        (np.array([[np.nan, 0.5, np.inf]]), "1 NaN and 1 infinite values"),
        (np.array([[-np.inf, 0.5]], np.float16), "0 NaN and 1 infinite"),
        (np.zeros((2, 2), np.complex64), "unsupported dtype complex64"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
    ],
)
def test_hostile_values_are_refused_by_name(array, message):
    with pytest.raises(ImageInputError, match=message):
        to_rgb(array)
    if array.dtype.kind in "if" and array.ndim == 2 and array.size and np.dtype(array.dtype).itemsize == 4:
        with pytest.raises(ImageInputError, match="PIL image"):  # mode I / F: the same rule, named
            to_rgb(Image.fromarray(array))


def test_other_inputs_are_type_errors():
    with pytest.raises(TypeError, match="got list"):
        to_rgb([[0, 1]])
    with pytest.raises(ImageInputError, match="expected an \\(H, W, 3\\) uint8"):
        check_image(np.zeros((2, 2), np.uint8))


# ---------------------------------------------------------------- the pixel limit


def test_images_above_the_pixel_limit_get_our_error(tmp_path, monkeypatch):
    array = np.zeros((11, 10, 3), np.uint8)
    path = _saved(array, tmp_path / "big.png")
    monkeypatch.setenv("LASAGNA_MAX_PIXELS", "100")
    for image in [array, Image.fromarray(array), path]:
        with pytest.raises(ImageTooLargeError, match=r"11x10 = 110 pixels is above the limit of 100 .*LASAGNA_MAX"):
            to_rgb(image)
    with pytest.raises(ImageTooLargeError, match="limit of 100"):
        check_image(array)
    monkeypatch.setenv("LASAGNA_MAX_PIXELS", "110")
    assert to_rgb(path).shape == (11, 10, 3)
    monkeypatch.setenv("LASAGNA_MAX_PIXELS", "many")
    with pytest.raises(ValueError, match="LASAGNA_MAX_PIXELS='many'"):
        to_rgb(array)


def test_pillow_decompression_bombs_get_our_error(tmp_path, monkeypatch):
    path = _saved(np.zeros((20, 20), np.uint8), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # Pillow refuses above 2 x 150 = 300 pixels
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png.*exceeds limit of 300.*MAX_IMAGE_PIXELS"):
        to_rgb(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 250)  # 400 pixels: Pillow only warns; our limit decides
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert to_rgb(path).shape == (20, 20, 3)


def test_a_side_longer_than_the_maximum_is_refused():
    with pytest.raises(ImageTooLargeError, match="side longer than 65,535"):
        to_rgb(np.zeros((1, MAX_SIDE + 1), np.uint8))
    assert to_rgb(np.zeros((1, MAX_SIDE), np.uint8)).shape == (1, MAX_SIDE, 3)


def test_exif_orientation_applies_to_files_and_pil_images(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 3x4 is shown 4x3
    array = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    path = _saved(array, tmp_path / "rot.png", exif=exif.tobytes())
    upright = to_rgb(path)
    assert upright.shape == (4, 3, 3)
    np.testing.assert_array_equal(to_rgb(Image.open(io.BytesIO(path.read_bytes()))), upright)
    np.testing.assert_array_equal(to_rgb(path, exif_transpose=False), array)


def test_prepare_holds_both_encoders_pixels_and_pickles_for_dataloader_workers():
    cfg = PreprocessConfig(clip_size=32, sam_size=64)
    image = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    prepared = pickle.loads(pickle.dumps(prepare(image, cfg)))  # as it comes back from a worker
    sam, resized = sam_pixels(image, cfg)
    assert torch.equal(prepared.clip, clip_pixels(image, cfg)) and torch.equal(prepared.sam, sam)
    assert prepared.resized == resized == (38, 64) and prepared.size == (30, 50) and prepared.config == cfg
    assert np.array_equal(prepared.image, image)
    with pytest.raises(ImageInputError, match=r"photo\.png: expected an \(H, W, 3\) uint8"):
        prepare(image[:, :, :2], cfg, "photo.png")


def test_files_that_are_no_image_say_why_naming_the_file_once(tmp_path):
    from lasagna.preprocess import ImageReadError, to_rgb

    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not an image\n")
    for name, why in (("empty.png", "is empty (0 bytes)"), ("text.jpg", "not in an image format Pillow reads")):
        with pytest.raises(ImageReadError, match=re.escape(why)) as info:
            to_rgb(tmp_path / name)
        assert str(info.value).count(name) == 1
