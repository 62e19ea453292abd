"""Sampling masks: exact counts where the scheme fixes them, fastMRI's documented semantics, seeding."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sgdip_jax.operators.masks import (
    bernoulli_pixels,
    box,
    equispaced_lines,
    parse_mask_spec,
    random_lines,
    vdrs,
)


def _lines(mask):
    """The 1-D column pattern of a line mask, after checking that whole columns are set."""
    assert mask.dtype == np.float32 and mask.ndim == 2
    np.testing.assert_array_equal(mask, np.broadcast_to(mask[:1], mask.shape))
    assert set(np.unique(mask)) <= {0.0, 1.0}
    return mask[0].astype(bool)


def _centre(width, n):
    start = (width - n + 1) // 2
    return np.arange(start, start + n)


def test_vdrs_reference_case():
    mask, acc = vdrs(shape=(640, 372), acceleration=4, center_fraction=0.08, seed=0)
    lines = _lines(mask)
    assert mask.shape == (640, 372)
    assert lines.sum() == 93 and acc == pytest.approx(4.0)
    centre = _centre(372, 29)
    assert lines[centre].all() and 372 // 2 in centre
    # the centre block is exactly 29 lines: the lines bordering it come from the random draw,
    # so over seeds they are not always sampled
    borders = [
        vdrs((8, 372), acceleration=4, center_fraction=0.08, seed=s)[0][0, [centre[0] - 1, centre[-1] + 1]]
        for s in range(20)
    ]
    assert np.mean(borders) < 1


@settings(max_examples=30, deadline=None)
@given(
    width=st.integers(16, 400),
    acceleration=st.floats(1.5, 10.0),
    center_fraction=st.floats(0.0, 0.1),
    seed=st.integers(0, 2**31),
)
def test_vdrs_exact_counts(width, acceleration, center_fraction, seed):
    n_center = math.floor(center_fraction * width + 1e-9)
    n_total = round(width / acceleration)
    if n_center > width / acceleration:
        with pytest.raises(ValueError, match="center_fraction"):
            vdrs((3, width), acceleration=acceleration, center_fraction=center_fraction, seed=seed)
        return
    mask, acc = vdrs((3, width), acceleration=acceleration, center_fraction=center_fraction, seed=seed)
    lines = _lines(mask)
    assert lines.sum() == n_total
    assert lines[_centre(width, n_center)].all()
    assert acc == pytest.approx(width / n_total)
    np.testing.assert_array_equal(
        mask, vdrs((3, width), acceleration=acceleration, center_fraction=center_fraction, seed=seed)[0]
    )


def test_vdrs_outer_lines_are_uniform():
    """Each non-centre column is drawn with probability (n_total - n_c) / (W - n_c)."""
    width, n_center, n_total, draws = 100, 8, 25, 2000
    freq = np.mean([vdrs((1, width), acceleration=4, center_fraction=0.08, seed=s)[0][0] for s in range(draws)], axis=0)
    outer = np.setdiff1d(np.arange(width), _centre(width, n_center))
    p = (n_total - n_center) / (width - n_center)
    se = math.sqrt(p * (1 - p) / draws)
    assert np.all(np.abs(freq[outer] - p) < 5 * se)
    assert not np.array_equal(vdrs((1, width), seed=1)[0], vdrs((1, width), seed=2)[0])


@pytest.mark.parametrize("width,acceleration,center_fraction", [(368, 4, 0.08), (372, 8, 0.04), (320, 4, 0.08)])
def test_random_lines_fastmri_semantics(width, acceleration, center_fraction):
    """fastMRI RandomMaskFunc: round(W*cf) centre lines; others with p = (W/acc - n_c)/(W - n_c),
    so the expected number of lines is W / acceleration."""
    n_center = round(width * center_fraction)
    p = (width / acceleration - n_center) / (width - n_center)
    outer = np.setdiff1d(np.arange(width), _centre(width, n_center))
    draws = 400
    counts, outer_counts = [], []
    for seed in range(draws):
        mask, acc = random_lines((2, width), acceleration=acceleration, center_fraction=center_fraction, seed=seed)
        lines = _lines(mask)
        assert lines[_centre(width, n_center)].all()
        assert acc == pytest.approx(width / lines.sum())
        counts.append(lines.sum())
        outer_counts.append(lines[outer].sum())
    # outer count ~ Binomial(W - n_c, p): mean and variance
    sd = math.sqrt((width - n_center) * p * (1 - p))
    assert abs(np.mean(counts) - width / acceleration) < 4 * sd / math.sqrt(draws)
    assert np.var(outer_counts) == pytest.approx(sd**2, rel=0.25)


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(64, 640),
    acceleration=st.sampled_from([2, 3, 4, 6, 8, 10]),
    center_fraction=st.sampled_from([0.0, 0.04, 0.08]),
    seed=st.integers(0, 1000),
)
def test_equispaced_lines_fastmri_semantics(width, acceleration, center_fraction, seed):
    """Centre lines plus columns round(offset + j a), a = acc (W - n_c) / (W - acc n_c), which makes
    the line count W / acceleration up to the spaced lines that fall into the centre."""
    n_center = round(width * center_fraction)
    a = acceleration * (width - n_center) / (width - acceleration * n_center)
    assume(4 * a <= width)  # several spaced lines outside the centre (else the spacing says nothing)
    mask, acc = equispaced_lines((2, width), acceleration=acceleration, center_fraction=center_fraction, seed=seed)
    lines = _lines(mask)
    centre = _centre(width, n_center)
    assert lines[centre].all()
    outer = np.flatnonzero(lines & ~np.isin(np.arange(width), centre))
    assert outer.min() < round(a)  # offset in [0, round(a))
    # neighbouring spaced lines are floor(a) or ceil(a) apart, except across the centre block
    gaps = np.diff(outer)
    across = np.zeros(len(gaps), bool)
    if n_center:
        across = (outer[:-1] < centre.min()) & (outer[1:] > centre.max())
    assert np.all((gaps[~across] >= math.floor(a)) & (gaps[~across] <= math.ceil(a)))
    assert outer.max() >= width - 2 - a
    assert abs(lines.sum() - width / acceleration) <= n_center / a + 2
    assert acc == pytest.approx(width / lines.sum())


def test_equispaced_offset_and_exact_example():
    # W = 100, acc = 4, cf = 0.08: n_c = 8 (columns 46..53), a = 4 * 92 / 68; offset 0 gives the
    # spaced columns round(j * 92 / 17) for j * 92 / 17 < 99
    mask, _ = equispaced_lines((1, 100), acceleration=4, center_fraction=0.08, offset=0)
    expected = set(range(46, 54)) | {int(np.round(j * 92 / 17)) for j in range(19)}
    assert set(np.flatnonzero(mask[0])) == expected
    assert len(expected) == 26  # 8 + 19 spaced lines, one of which (49) lies in the centre
    with pytest.raises(ValueError, match="offset"):
        equispaced_lines((1, 100), acceleration=4, center_fraction=0.08, offset=100)


def test_bernoulli_pixels():
    mask, acc = bernoulli_pixels((64, 80), missing=0.3, seed=3)
    assert mask.shape == (64, 80) and mask.dtype == np.float32
    n = mask.size
    assert abs(mask.mean() - 0.7) < 4 * math.sqrt(0.21 / n)
    assert acc == pytest.approx(n / mask.sum())
    np.testing.assert_array_equal(mask, bernoulli_pixels((64, 80), 0.3, seed=3)[0])
    assert not np.array_equal(mask, bernoulli_pixels((64, 80), 0.3, seed=4)[0])
    assert bernoulli_pixels((4, 4), missing=0.0)[1] == 1.0


def test_box():
    mask, acc = box((10, 12), 4)
    hole = np.zeros((10, 12), bool)
    hole[3:7, 4:8] = True
    np.testing.assert_array_equal(mask == 0, hole)
    assert acc == pytest.approx(120 / 104)
    with pytest.raises(ValueError, match="size"):
        box((10, 12), 11)
    with pytest.raises(ValueError, match="empty"):
        box((8, 8), 8)


@pytest.mark.parametrize(
    "spec,fn,kwargs",
    [
        ("vdrs:4", vdrs, dict(acceleration=4, center_fraction=0.08, seed=5)),
        ("vdrs:8:0.04", vdrs, dict(acceleration=8, center_fraction=0.04, seed=5)),
        ("random:4:0.08", random_lines, dict(center_fraction=0.08, acceleration=4, seed=5)),
        ("equispaced:8:0.04", equispaced_lines, dict(center_fraction=0.04, acceleration=8, seed=5)),
        ("bernoulli:0.5", bernoulli_pixels, dict(missing=0.5, seed=5)),
        ("box:16", box, dict(size=16)),
    ],
)
def test_parse_mask_spec(spec, fn, kwargs):
    mask, acc = parse_mask_spec(spec, (48, 64), seed=5)
    ref, ref_acc = fn((48, 64), **kwargs)
    np.testing.assert_array_equal(mask, ref)
    assert acc == ref_acc


@pytest.mark.parametrize(
    "spec,match",
    [
        ("poisson:4", "unknown kind"),
        ("vdrs", "takes 1 to 2 values"),
        ("random:4:0.08:1", "takes 1 to 2 values"),
        ("box:big", "must be numbers"),
        ("vdrs:0.5", "acceleration"),
        ("equispaced:4:1.5", "center_fraction"),
        ("bernoulli:1.0", "missing"),
    ],
)
def test_parse_mask_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_mask_spec(spec, (48, 64))
    assert repr(spec) in str(err.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        vdrs((4, 4, 4))
    with pytest.raises(ValueError, match="center_fraction"):
        random_lines((8, 64), center_fraction=0.5, acceleration=4)
    with pytest.raises(ValueError, match="centre lines"):
        equispaced_lines((8, 64), center_fraction=0.25, acceleration=4)


def test_line_masks_take_their_parameters_by_keyword():
    """One order for every line mask: a positional acceleration or centre fraction is refused."""
    for fn in (vdrs, random_lines, equispaced_lines):
        with pytest.raises(TypeError):
            fn((4, 64), 4, 0.08)
        assert fn((4, 64), acceleration=4, center_fraction=0.08, seed=0)[0].shape == (4, 64)
