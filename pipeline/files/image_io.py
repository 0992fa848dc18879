"""Decoding any input image once, to uint8 RGB (H, W, 3), plus the focal length from EXIF.

Accepted sources: a file path, the file's bytes, a PIL image, or a numpy array
((H, W), (H, W, 1|2|3|4); uint8, uint16, other integers, bool or float).

Decisions (each one tested in tests/test_image_io.py):
- EXIF orientation is applied (`ImageOps.exif_transpose`), so the prediction matches what
  an image viewer shows.
- Transparency (RGBA, LA, PA, P or L with a transparent colour, 4-channel arrays) is
  composited on WHITE: the colour under fully transparent pixels is arbitrary (often black),
  and white is what a viewer shows on a light page.
- High bit depth (PIL modes I;16*, I, F; uint16 / int / float arrays) is scaled to 8 bits by
  the values' range, [min, max] -> [0, 255] over all colour channels together, never by
  truncation. Exception: float data already within [0, 1] is taken as intensities (x * 255).
  A constant high-bit-depth image keeps its level on the nominal range (v / 257 for 16 bit).
- CMYK, YCbCr, LAB, 1-bit etc. go through PIL's conversion to RGB; multi-frame files use
  their first frame.
- Limits: at most `max_pixels` pixels (default MAX_PIXELS = 50 megapixels) and at least
  MIN_SIDE = 2 pixels on each side. A 1x1 image carries no spatial structure for a depth
  network to read, so it is refused with a clear message rather than "predicted".
- Anything unusable (missing, empty, not an image, truncated, too large, too small, NaN or
  infinite values) raises `ImageError` naming the source and the problem.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageError

MAX_PIXELS = 50_000_000      # 50 megapixels; PIL's own hard limit (2 x 89.5 MP) still applies above it
MIN_SIDE = 2                 # pixels; 1-pixel-wide images are refused

_EXIF_IFD = 0x8769
_TAG_FOCAL_35MM = 0xA405       # FocalLengthIn35mmFilm (mm, 35 mm equivalent)
_TAG_FOCAL = 0x920A            # FocalLength (mm)
_TAG_FP_XRES = 0xA20E          # FocalPlaneXResolution (pixels per unit)
_TAG_FP_UNIT = 0xA210          # FocalPlaneResolutionUnit: 2 inch, 3 cm, 4 mm
_TAG_EXIF_WIDTH = 0xA002       # PixelXDimension: width the FocalPlane resolution refers to
_TAG_EXIF_HEIGHT = 0xA003
_MM_PER_UNIT = {1: 25.4, 2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
_FULL_FRAME_WIDTH_MM = 36.0    # a 35 mm frame is 36 mm on its long side: f_px = f35 / 36 * long side
_HIGH_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


@dataclass
class DecodedImage:
    rgb: np.ndarray           # (H, W, 3) uint8
    focal_px: float | None    # focal length in pixels of `rgb`, from EXIF; None when unknown
    name: str                 # file name or a description of the source
    original_mode: str        # PIL mode, or "array <dtype> <channels>ch"

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def decode_image(src, *, max_pixels: int = MAX_PIXELS, name: str | None = None) -> DecodedImage:
    """Any path / bytes / PIL image / numpy array (or a DecodedImage) -> DecodedImage."""
    if isinstance(src, DecodedImage):
        return src
    if isinstance(src, np.ndarray):
        return _decode_array(src, name or "<array>", max_pixels)
    if isinstance(src, Image.Image):
        label = name or os.path.basename(getattr(src, "filename", "") or "") or "<PIL image>"
        return _decode_pil(src, label, max_pixels)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _open_and_decode(io.BytesIO(bytes(src)), name or "<bytes>", max_pixels, len(src))
    if isinstance(src, (str, os.PathLike)):
        return _decode_path(Path(src), name, max_pixels)
    raise ImageError(f"cannot read an image from a {type(src).__name__}; pass a file path, bytes, "
                     "a PIL image or a numpy array")


def _decode_path(path: Path, name: str | None, max_pixels: int) -> DecodedImage:
    label = name or str(path)
    if not path.exists():
        raise ImageError(f"{label}: file not found")
    if path.is_dir():
        raise ImageError(f"{label}: is a folder, not an image file")
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):          # a FIFO would block the read forever
        raise ImageError(f"{label}: not a regular file (a FIFO, socket or device); not read")
    size = st.st_size
    try:
        with open(path, "rb") as f:
            return _open_and_decode(f, label, max_pixels, size)
    except PermissionError:
        raise ImageError(f"{label}: permission denied; check the file's read permissions") from None


def _open_and_decode(fp, label: str, max_pixels: int, n_bytes: int) -> DecodedImage:
    if n_bytes == 0:
        raise ImageError(f"{label}: the file is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap applies
        try:
            im = Image.open(fp)
        except Image.DecompressionBombError:
            raise _too_large(label, None, max_pixels) from None
        except Image.UnidentifiedImageError:
            raise ImageError(f"{label}: not an image file (or a format PIL cannot read)") from None
        except Exception as e:  # PIL raises many types on malformed headers
            raise ImageError(f"{label}: cannot read the image header ({e})") from None
        with im:
            return _decode_pil(im, label, max_pixels)


def _too_large(label: str, size: tuple[int, int] | None, max_pixels: int) -> ImageError:
    dims = f" is {size[0]}x{size[1]} pixels and" if size else ""
    return ImageError(f"{label}:{dims} exceeds the limit of {max_pixels:,} pixels (a decompression-bomb "
                      "guard); resize the image, or raise max_pixels if you trust the file")


def _check_size(label: str, width: int, height: int, max_pixels: int) -> None:
    if width == 0 or height == 0:
        raise ImageError(f"{label}: the image is empty ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise _too_large(label, (width, height), max_pixels)
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{label}: the image is {width}x{height} pixels; depth needs at least "
                         f"{MIN_SIDE} pixels on each side")


def _decode_pil(im: Image.Image, label: str, max_pixels: int) -> DecodedImage:
    _check_size(label, im.width, im.height, max_pixels)
    mode = im.mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im.load()
            exif = im.getexif()
            im = ImageOps.exif_transpose(im)
            rgb = _pil_to_rgb(im, label)
        except ImageError:
            raise
        except Image.DecompressionBombError:
            raise _too_large(label, (im.width, im.height), max_pixels) from None
        except Exception as e:  # truncated or corrupt data: OSError, SyntaxError, ValueError, ...
            raise ImageError(f"{label}: the image data is corrupt or truncated ({e})") from None
    return DecodedImage(rgb=rgb, focal_px=_exif_focal_px(exif, rgb.shape[1], rgb.shape[0]),
                        name=label, original_mode=mode)


def _pil_to_rgb(im: Image.Image, label: str) -> np.ndarray:
    if im.mode == "RGB":
        return np.array(im, dtype=np.uint8)
    if im.mode in _HIGH_DEPTH_MODES:
        gray = _to_uint8(np.asarray(im), label)                              # (H, W)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        return _composite_on_white(rgba[..., :3], rgba[..., 3].astype(np.float32) / 255.0)
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _composite_on_white(rgb_u8: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colour and (H, W) alpha in [0, 1] -> (H, W, 3) uint8 over white."""
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    out = rgb_u8.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_uint8(values: np.ndarray, label: str) -> np.ndarray:
    """Any numeric array -> uint8 by the rules in the module docstring (same shape)."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ImageError(f"{label}: unsupported pixel type {values.dtype}; use uint8, uint16 or float")
    x = values.astype(np.float64)
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).sum())
            raise ImageError(f"{label}: {bad} pixel value(s) are NaN or infinite; fix or fill them first")
        lo, hi = float(x.min()), float(x.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.rint(x * 255.0).astype(np.uint8)
        nominal = 1.0
    else:
        lo, hi = float(x.min()), float(x.max())
        nominal = 257.0 if values.dtype.itemsize <= 2 else 16843009.0  # 65535/255, (2^32-1)/255
    if hi == lo:
        return np.full(x.shape, np.clip(np.rint(lo / nominal), 0, 255), dtype=np.uint8)
    return np.rint((x - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _alpha_fraction(alpha: np.ndarray) -> np.ndarray:
    """An alpha channel of any dtype -> float32 in [0, 1] (uint8 /255, uint16 /65535, float as is)."""
    if np.issubdtype(alpha.dtype, np.floating):
        return np.clip(np.nan_to_num(alpha.astype(np.float32), nan=1.0), 0.0, 1.0)
    if alpha.dtype == np.bool_:
        return alpha.astype(np.float32)
    return alpha.astype(np.float32) / float(np.iinfo(alpha.dtype).max)


def _decode_array(a: np.ndarray, label: str, max_pixels: int) -> DecodedImage:
    if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):
        channels = a.shape[2]
    elif a.ndim == 2:
        channels, a = 1, a[..., None]
    else:
        raise ImageError(f"{label}: an array of shape {a.shape} is not an image; expected (H, W) or "
                         "(H, W, C) with C in 1, 2, 3, 4")
    _check_size(label, a.shape[1], a.shape[0], max_pixels)
    colour_ch = 3 if channels >= 3 else 1
    colour = _to_uint8(a[..., :colour_ch], label)                            # (H, W, 1|3)
    if colour_ch == 1:
        colour = np.repeat(colour, 3, axis=2)
    if channels in (2, 4):
        colour = _composite_on_white(colour, _alpha_fraction(a[..., -1]))
    return DecodedImage(rgb=np.array(colour, dtype=np.uint8, order="C"), focal_px=None, name=label,
                        original_mode=f"array {a.dtype} {channels}ch")


def _ratio(value) -> float | None:
    try:
        v = float(value[0]) / float(value[1]) if isinstance(value, tuple) else float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _exif_focal_px(exif, width: int, height: int) -> float | None:
    """Focal length in pixels of the (oriented) image: 35 mm equivalent first, else focal-plane resolution."""
    try:
        tags = {**dict(exif), **dict(exif.get_ifd(_EXIF_IFD))}
    except Exception:
        return None
    long_side = max(width, height)
    f35 = _ratio(tags.get(_TAG_FOCAL_35MM))
    if f35:
        return f35 / _FULL_FRAME_WIDTH_MM * long_side
    focal_mm, xres = _ratio(tags.get(_TAG_FOCAL)), _ratio(tags.get(_TAG_FP_XRES))
    if not (focal_mm and xres):
        return None
    mm_per_unit = _MM_PER_UNIT.get(int(tags.get(_TAG_FP_UNIT, 2) or 2), 25.4)
    focal_px = focal_mm * xres / mm_per_unit
    # FocalPlaneXResolution refers to the sensor image; rescale if the file was resized since.
    exif_long = max(_ratio(tags.get(_TAG_EXIF_WIDTH)) or 0, _ratio(tags.get(_TAG_EXIF_HEIGHT)) or 0)
    if exif_long:
        focal_px *= long_side / exif_long
    return float(focal_px)
