"""Procedural face drawing: a person (`Identity`), a recording (`Scene`), and one frame per AU vector.

Geometry lives in face units: x to the right, y down, the head is an ellipse of half-width 1 and half-height
`face_ratio` around (0, 0). `_Pose` maps face units to canvas pixels (centre, scale, in-plane rotation), so
head motion moves and turns every feature together. Frames are drawn with PIL at `supersample` times the
output size and box-downsampled (cheap antialiasing); lighting and sensor noise are applied with numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from rdfer.data.synth.expressions import AU

Colour = tuple[int, int, int]

_SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 94], [161, 104, 70], [112, 72, 48]],
    dtype=np.float64,
)
_HAIR_TONES = np.array(
    [[30, 22, 18], [70, 45, 28], [120, 80, 40], [200, 170, 110], [90, 90, 90]], dtype=np.float64
)
_IRIS_TONES = np.array([[60, 40, 25], [40, 90, 140], [70, 110, 60], [30, 25, 20]], dtype=np.float64)
_MOUTH_INSIDE: Colour = (70, 20, 28)
_TEETH: Colour = (236, 234, 222)
_SCLERA: Colour = (242, 240, 234)
_CIRCLE = np.linspace(0.0, 2.0 * math.pi, 28, endpoint=False)


@dataclass(frozen=True, eq=False)
class Identity:
    """One synthetic person: face shape, colours and a relaxed face that is not exactly AU-zero."""

    skin: Colour
    hair: Colour
    hair_style: int  # 0 bald, 1 short (cap), 2 long (cap + hair behind the head)
    hairline: float
    iris: Colour
    lips: Colour
    brows: Colour
    face_ratio: float
    eye_dx: float
    eye_y: float
    eye_w: float
    eye_h: float
    brow_gap: float
    brow_arch: float
    brow_w: float
    nose_y: float
    mouth_y: float
    mouth_w: float
    lip_t: float
    resting: np.ndarray  # [n_au] small AU offsets of this person's relaxed face


def sample_identity(rng: np.random.Generator) -> Identity:
    skin = _mix(rng, _SKIN_TONES) + rng.normal(0, 6, 3)
    hair = _mix(rng, _HAIR_TONES)
    ratio = rng.uniform(1.18, 1.42)
    resting = np.zeros(len(AU))
    # Some people look a little happy, sad or stern at rest: neutral is not "all zero".
    for name in rng.choice(list(AU), size=2, replace=False):
        resting[AU[name]] = rng.uniform(0.0, 0.15)
    return Identity(
        skin=_colour(skin),
        hair=_colour(hair),
        hair_style=int(rng.integers(3)),
        hairline=-ratio * rng.uniform(0.45, 0.62),
        iris=_colour(_IRIS_TONES[rng.integers(len(_IRIS_TONES))]),
        lips=_colour(skin * np.array([0.85, 0.55, 0.55]) + np.array([40, 10, 10]) + rng.normal(0, 5, 3)),
        brows=_colour(np.minimum(hair * 0.55, skin * 0.5)),  # brows stay darker than the skin, even blond
        face_ratio=ratio,
        eye_dx=rng.uniform(0.36, 0.46),
        eye_y=-ratio * rng.uniform(0.08, 0.18),
        eye_w=rng.uniform(0.17, 0.22),
        eye_h=rng.uniform(0.085, 0.11),
        brow_gap=rng.uniform(0.17, 0.24),
        brow_arch=rng.uniform(0.02, 0.07),
        brow_w=rng.uniform(0.06, 0.1),
        nose_y=ratio * rng.uniform(0.18, 0.28),
        mouth_y=ratio * rng.uniform(0.5, 0.6),
        mouth_w=rng.uniform(0.26, 0.34),
        lip_t=rng.uniform(0.05, 0.08),
        resting=resting,
    )


@dataclass(frozen=True, eq=False)
class Scene:
    """One recording of an identity: framing, head motion, background, lighting, sensor noise, blinks."""

    background: Image.Image  # at the drawing resolution
    light: np.ndarray  # [size, size, 1] multiplicative shading at the output resolution
    centre: tuple[float, float]  # canvas pixels
    half_width: float  # head half-width in canvas pixels
    angle: float  # degrees
    sway: np.ndarray  # [4, 3] amplitude, frequency (Hz), phase for dx, dy, angle, scale
    noise_std: float
    blinks: frozenset[int]  # 0-based frames with the eyes (nearly) closed


def sample_scene(
    rng: np.random.Generator,
    size: int,
    supersample: int,
    num_frames: int,
    noise_range: tuple[float, float],
    face_scale: tuple[float, float] = (0.40, 0.46),
) -> Scene:
    canvas = size * supersample
    sway = np.stack(
        [
            [rng.uniform(0, 0.03) * canvas, rng.uniform(0.1, 0.6), rng.uniform(0, 2 * math.pi)],
            [rng.uniform(0, 0.02) * canvas, rng.uniform(0.1, 0.6), rng.uniform(0, 2 * math.pi)],
            [rng.uniform(0, 5.0), rng.uniform(0.1, 0.5), rng.uniform(0, 2 * math.pi)],
            [rng.uniform(0, 0.04), rng.uniform(0.1, 0.4), rng.uniform(0, 2 * math.pi)],
        ]
    )
    blinks: set[int] = set()
    for _ in range(int(rng.integers(0, 3))):
        start = int(rng.integers(num_frames))
        blinks.update(range(start, min(num_frames, start + 2)))
    return Scene(
        background=_background(rng, canvas),
        light=_lighting(rng, size),
        centre=(canvas * (0.5 + rng.uniform(-0.04, 0.04)), canvas * (0.5 + rng.uniform(-0.02, 0.05))),
        half_width=canvas * rng.uniform(*face_scale),
        angle=rng.uniform(-7.0, 7.0),
        sway=sway,
        noise_std=rng.uniform(*noise_range),
        blinks=frozenset(blinks),
    )


def render_clip(
    identity: Identity,
    scene: Scene,
    aus: np.ndarray,
    size: int,
    supersample: int,
    fps: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """One uint8 [size, size, 3] RGB frame per row of `aus` ([num_frames, n_au], resting face included)."""
    frames = []
    for t, au in enumerate(aus):
        seconds = t / fps
        amp, freq, phase = scene.sway[:, 0], scene.sway[:, 1], scene.sway[:, 2]
        dx, dy, dangle, dscale = amp * np.sin(2 * math.pi * freq * seconds + phase)
        pose = _Pose(
            scene.centre[0] + dx, scene.centre[1] + dy, scene.half_width * (1 + dscale), scene.angle + dangle
        )
        image = scene.background.copy()
        _draw_face(ImageDraw.Draw(image), identity, au, pose, blink=t in scene.blinks)
        if supersample > 1:
            image = image.reduce(supersample)
        pixels = np.asarray(image, dtype=np.float32) * scene.light
        noise = rng.standard_normal(pixels.shape, dtype=np.float32)
        pixels += noise * np.float32(scene.noise_std) + np.float32(0.5)  # + 0.5: round, not truncate
        frames.append(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))
    return frames


class _Pose:
    def __init__(self, cx: float, cy: float, scale: float, angle_deg: float) -> None:
        a = math.radians(angle_deg)
        self.cx, self.cy, self.scale, self.cos, self.sin = cx, cy, scale, math.cos(a), math.sin(a)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> list[float]:
        """Face-unit points -> the flat [x0, y0, x1, y1, ...] list PIL draws."""
        flat = np.empty(2 * len(x))
        flat[0::2] = self.cx + self.scale * (self.cos * x - self.sin * y)
        flat[1::2] = self.cy + self.scale * (self.sin * x + self.cos * y)
        return flat.tolist()

    def px(self, face_units: float) -> int:
        return max(1, round(face_units * self.scale))


def _ellipse(cx: float, cy: float, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    return cx + a * np.cos(_CIRCLE), cy + b * np.sin(_CIRCLE)


def _draw_face(draw: ImageDraw.ImageDraw, who: Identity, au: np.ndarray, pose: _Pose, blink: bool) -> None:
    r = who.face_ratio
    skin = np.array(who.skin, dtype=np.float64)

    def shade(k: float) -> Colour:  # darker skin, for folds and wrinkles
        return _colour(skin * (1 - k))

    draw.polygon(
        pose(np.array([-0.42, 0.42, 0.5, -0.5]), np.array([0.6 * r, 0.6 * r, 2.5 * r, 2.5 * r])),
        fill=shade(0.15),
    )
    if who.hair_style == 2:
        draw.polygon(pose(*_ellipse(0, -0.05 * r, 1.14, 1.12 * r)), fill=who.hair)
    draw.polygon(pose(*_ellipse(0, 0, 1.0, r)), fill=who.skin)
    if who.hair_style > 0:
        x, y = _ellipse(0, 0, 1.05, 1.05 * r)
        top = y < 0
        draw.polygon(pose(x[top], np.minimum(y[top], who.hairline)), fill=who.hair)

    cheek = au[AU["cheek_raise"]]
    if cheek > 0.05:
        blush = _colour(skin * (1 - 0.35 * cheek) + np.array([200, 90, 90]) * 0.35 * cheek)
        for side in (-1, 1):
            draw.polygon(
                pose(*_ellipse(side * 0.55, who.mouth_y - 0.3 * r - 0.1 * cheek, 0.17, 0.12)), fill=blush
            )

    _draw_eyes(draw, who, au, pose, blink)
    _draw_brows(draw, who, au, pose, shade)
    _draw_nose(draw, who, au, pose, shade)
    _draw_mouth(draw, who, au, pose, shade)


def _draw_eyes(draw: ImageDraw.ImageDraw, who: Identity, au: np.ndarray, pose: _Pose, blink: bool) -> None:
    openness = (
        1.0
        + 0.9 * au[AU["eye_widen"]]
        - 0.55 * au[AU["eye_narrow"]]
        - 0.35 * au[AU["cheek_raise"]]
        - 0.15 * au[AU["brow_lower"]]
    )
    openness = 0.08 if blink else max(0.15, openness)
    lid = max(1, pose.px(0.035))
    for side in (-1, 1):
        cx, cy = side * who.eye_dx, who.eye_y
        b = who.eye_h * openness
        draw.polygon(pose(*_ellipse(cx, cy, who.eye_w, b)), fill=_SCLERA)
        iris_r = who.eye_h * 0.95
        draw.polygon(pose(*_ellipse(cx, cy, iris_r, min(iris_r, b))), fill=who.iris)
        draw.polygon(pose(*_ellipse(cx, cy, iris_r * 0.45, min(iris_r * 0.45, b))), fill=(15, 12, 12))
        x, y = _ellipse(cx, cy, who.eye_w * 1.05, b * 1.1)
        half = len(_CIRCLE) // 2
        upper = np.append(np.arange(half, len(_CIRCLE)), 0)  # upper lid: angles pi..2pi, corner to corner
        draw.line(pose(x[upper], y[upper]), fill=(25, 18, 16), width=lid)


def _draw_brows(draw: ImageDraw.ImageDraw, who: Identity, au: np.ndarray, pose: _Pose, shade) -> None:
    raise_, inner, lower, together = (
        au[AU[k]] for k in ("brow_raise", "brow_inner_raise", "brow_lower", "brow_together")
    )
    base = who.eye_y - who.brow_gap
    inner_y = base - 0.2 * raise_ - 0.24 * inner + 0.15 * lower + 0.1 * together
    outer_y = base - 0.17 * raise_ - 0.02 * inner + 0.12 * lower - 0.04 * together
    arch = who.brow_arch * (1 - 0.7 * inner)
    width = pose.px(who.brow_w)
    for side in (-1, 1):
        inner_x = side * (who.eye_dx - who.eye_w * 0.9 - 0.09 * together)
        outer_x = side * (who.eye_dx + who.eye_w * 1.15)
        xs = np.array([inner_x, (inner_x + outer_x) / 2, outer_x])
        ys = np.array([inner_y, (inner_y + outer_y) / 2 - arch, outer_y])
        draw.line(pose(xs, ys), fill=who.brows, width=width, joint="curve")
    thin = pose.px(0.03)
    if raise_ > 0.15:  # forehead lines, between the raised brows and the hairline
        top = who.hairline + 0.06 if who.hair_style else -who.face_ratio * 0.8
        for k in range(3):
            y = base - 0.3 - 0.11 * k - 0.1 * raise_
            if y < top:
                break
            draw.line(
                pose(np.array([-0.35, 0.0, 0.35]), np.array([y, y - 0.03, y])),
                fill=shade(0.3 * raise_),
                width=thin,
            )
    if together > 0.2:  # frown lines between the brows
        for side in (-1, 1):
            draw.line(
                pose(np.array([side * 0.05] * 2), np.array([inner_y - 0.05, inner_y + 0.12])),
                fill=shade(0.3 * together),
                width=thin,
            )


def _draw_nose(draw: ImageDraw.ImageDraw, who: Identity, au: np.ndarray, pose: _Pose, shade) -> None:
    wrinkle, lift = au[AU["nose_wrinkle"]], au[AU["upper_lip_raise"]]
    tip = who.nose_y - 0.04 * wrinkle - 0.03 * lift
    draw.line(
        pose(np.array([0.0, 0.05, 0.0]), np.array([who.eye_y + 0.08, tip - 0.02, tip])),
        fill=shade(0.22),
        width=pose.px(0.035),
    )
    spread = 0.09 * (1 + 0.35 * wrinkle)
    for side in (-1, 1):
        draw.polygon(pose(*_ellipse(side * spread, tip, 0.05, 0.03)), fill=shade(0.5))
    if wrinkle > 0.1:
        for k in range(3):
            y = who.eye_y + 0.1 + 0.07 * k
            draw.line(
                pose(np.array([-0.11, 0.11]), np.array([y, y])),
                fill=shade(0.4 * wrinkle),
                width=pose.px(0.03),
            )
    fold = max(au[AU["lip_corner_pull"]], lift, wrinkle)
    if fold > 0.2:  # nasolabial folds, from the nose wing to beside the mouth corner
        for side in (-1, 1):
            xs = np.array([side * (spread + 0.06), side * (who.mouth_w + 0.12)])
            ys = np.array([tip - 0.02, who.mouth_y + 0.02])
            draw.line(pose(xs, ys), fill=shade(0.3 * fold), width=pose.px(0.03))


def _draw_mouth(draw: ImageDraw.ImageDraw, who: Identity, au: np.ndarray, pose: _Pose, shade) -> None:
    pull, depress, stretch, press, jaw, lift = (
        au[AU[k]]
        for k in (
            "lip_corner_pull",
            "lip_corner_depress",
            "lip_stretch",
            "lip_press",
            "jaw_drop",
            "upper_lip_raise",
        )
    )
    half = who.mouth_w * (1 + 0.25 * pull + 0.45 * stretch - 0.15 * press - 0.3 * jaw * (1 - stretch))
    y0 = who.mouth_y
    corner = y0 - 0.14 * pull + 0.16 * depress
    lip = who.lip_t * (1 - 0.7 * press)
    opening = 0.36 * jaw + 0.07 * pull
    s = np.linspace(-1.0, 1.0, 15)
    bulge = 1.0 - s * s
    snarl = 0.11 * lift * (0.6 + 0.4 * s)  # upper lip lifted, more on one side
    upper_seam = corner + (y0 - 0.01 - corner) * bulge - snarl * bulge**0.5
    # A wide-open jaw rounds the opening (towards an ellipse); a smile keeps it a U.
    lower_seam = corner + (y0 + opening - corner) * bulge ** (1.0 - 0.5 * jaw)
    upper_top = upper_seam - lip * 0.9 * bulge**0.5 - 0.01
    lower_bottom = lower_seam + lip * 1.15 * bulge**0.5 + 0.01
    x = s * half
    draw.polygon(
        pose(np.concatenate([x, x[::-1]]), np.concatenate([upper_top, lower_bottom[::-1]])), fill=who.lips
    )
    if opening + 0.5 * lift > 0.04:
        draw.polygon(
            pose(np.concatenate([x, x[::-1]]), np.concatenate([upper_seam, lower_seam[::-1]])),
            fill=_MOUTH_INSIDE,
        )
        if pull > 0.25 or lift > 0.25:  # upper teeth show in a smile or a snarl
            teeth = np.minimum(upper_seam + 0.05, (upper_seam + lower_seam) / 2)
            inner = slice(2, -2)
            draw.polygon(
                pose(
                    np.concatenate([x[inner], x[inner][::-1]]),
                    np.concatenate([upper_seam[inner], teeth[inner][::-1]]),
                ),
                fill=_TEETH,
            )
    else:
        draw.line(pose(x, upper_seam), fill=_colour(np.array(who.lips) * 0.5), width=pose.px(0.025))


def _mix(rng: np.random.Generator, palette: np.ndarray) -> np.ndarray:
    """A random blend of two neighbouring palette entries (a continuum of tones, not a few fixed ones)."""
    i = rng.uniform(0, len(palette) - 1)
    lo = int(i)
    return palette[lo] * (1 - (i - lo)) + palette[min(lo + 1, len(palette) - 1)] * (i - lo)


def _colour(value: np.ndarray) -> Colour:
    r, g, b = (min(255, max(0, round(float(v)))) for v in value)
    return (r, g, b)


def _background(rng: np.random.Generator, canvas: int) -> Image.Image:
    """A smooth random colour field with a few blurred shapes: an out-of-focus scene behind the face."""
    base = rng.uniform(40, 215, 3)
    field = base + rng.normal(0, 28, (4, 4, 3))
    image = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).resize((canvas, canvas), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * canvas
        w, h = rng.uniform(0.15, 0.5, 2) * canvas
        box = [float(x0), float(y0), float(x0 + w), float(y0 + h)]
        colour = _colour(base + rng.normal(0, 45, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
    return image.resize((canvas // 4, canvas // 4), Image.BILINEAR).resize((canvas, canvas), Image.BILINEAR)


def _lighting(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear shading gradient in a random direction times a global brightness."""
    direction = rng.uniform(0, 2 * math.pi)
    coords = np.linspace(-1.0, 1.0, size)
    gx, gy = np.meshgrid(coords, coords)
    gradient = math.cos(direction) * gx + math.sin(direction) * gy
    light = rng.uniform(0.8, 1.12) * (1.0 + rng.uniform(0.0, 0.22) * gradient)
    return light[..., None].astype(np.float32)
