"""Self-validation: the held-out measurements never reach the fit, the choice is recorded, does not
see the reference, and picks close to the best candidate; the engine continues a run exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sgdip_jax import engine
from sgdip_jax.config import NetworkConfig
from sgdip_jax.data.samples import sample_image, sample_mri
from sgdip_jax.early_stopping import ESConfig
from sgdip_jax.methods import SGDIPConfig, run_method
from sgdip_jax.methods.common import build_network, fast_key, network_forward, run_dip_batch, setup
from sgdip_jax.methods.self_validation import calibration_region, holdout_masks, measured_locations, split
from sgdip_jax.methods.sgdip import AUTO, LOW_SNR_NOISE_SCALE, NOISE_SCALES, sgdip_task
from sgdip_jax.metrics import center_crop, psnr
from sgdip_jax.operators import Inpainting
from sgdip_jax.operators.masks import bernoulli_pixels

TINY = NetworkConfig(name="unet1", base=4)
QUICK = dict(network=TINY, iterations=30, pilot=10, chunk=5, early_stopping=ESConfig(enabled=False))


@pytest.fixture(scope="module")
def case():
    return sample_mri(size=32, coils=4, acceleration=4, snr_db=30, seed=0)


def _inpainting(image="camera", seed=0):
    """``(operator, y, x)``: half the pixels of a 32 px crop of a scikit-image picture."""
    x = np.asarray(center_crop(sample_image(image, 64), 32, axes=(0, 1)))
    x = x.mean(axis=-1) if x.ndim == 3 else x
    op = Inpainting.create(bernoulli_pixels((32, 32), 0.5, seed=seed)[0])
    return op, op(jnp.asarray(x)), x


@pytest.fixture(scope="module")
def inpainting():
    return _inpainting()


def test_held_out_locations_avoid_the_calibration_centre_and_have_the_fraction(case):
    op = case.operator()
    measured = measured_locations(op)
    centre = calibration_region(measured)
    assert centre[:, 16].all() and not centre.all()  # the fully sampled central lines
    fit, held = holdout_masks(op, 0.2, jax.random.PRNGKey(3))
    assert not (held & centre).any() and not (fit & held).any()
    np.testing.assert_array_equal(fit | held, measured)
    assert held.sum() == round(0.2 * (measured & ~centre).sum())
    again = holdout_masks(op, 0.2, jax.random.PRNGKey(3))[1]
    other = holdout_masks(op, 0.2, jax.random.PRNGKey(4))[1]
    np.testing.assert_array_equal(held, again)
    assert (held != other).any()


def test_inpainting_holds_out_known_pixels_of_every_channel():
    mask, _ = bernoulli_pixels((16, 16), 0.5, seed=0)
    op = Inpainting.create(mask, channels=3)
    y = op(jnp.ones((16, 16, 3)))
    fit_op, y_fit, val_op, y_val = split(op, y, 0.25, jax.random.PRNGKey(0))
    held = np.asarray(val_op.mask)
    assert held.shape == (16, 16, 3) and (held[..., :1] == held).all()
    np.testing.assert_array_equal(np.asarray(fit_op.mask) + held, np.asarray(op.mask))
    assert float(jnp.sum(y_fit * held)) == 0.0 and float(jnp.sum(y_val)) == held.sum()


def test_held_out_entries_never_reach_the_fit(case):
    """The loss has zero gradient with respect to the held-out measurements, and the network's input,
    the rescaling and the fit data do not change when those measurements do."""
    op, y = case.operator(), jnp.asarray(case.y)
    config = SGDIPConfig(**QUICK, holdout=0.2, noise_scale=0.5)
    task = sgdip_task(config)
    problem = setup(task, op, y, 0)
    held = np.broadcast_to(np.asarray(problem.data["val_operator"].mask) != 0, y.shape)
    assert held.any()
    module = build_network(TINY, 2, (32, 32))
    loss_fn = task.make_loss(network_forward(module))
    k_hold = jax.random.split(fast_key(jax.random.PRNGKey(0)), 3)[2]  # as setup draws it for seed 0
    np.testing.assert_array_equal(split(op, y, 0.2, k_hold)[2].mask, problem.data["val_operator"].mask)

    def loss_of_measurements(re, im):
        fit_op, y_fit, _, _ = split(op, (re + 1j * im).astype(jnp.complex64), 0.2, k_hold)
        data = {**problem.data, "operator": fit_op, "y": y_fit * problem.data["scale"]}
        return loss_fn(problem.params, problem.net_state, problem.z, jax.random.PRNGKey(5), data)[0]

    g_re, g_im = jax.grad(loss_of_measurements, argnums=(0, 1))(jnp.real(y), jnp.imag(y))
    fit = np.asarray(problem.data["operator"].mask != 0)
    assert np.abs(np.asarray(g_re))[:, fit].max() > 0  # the fit entries do pull
    assert np.abs(np.asarray(g_re))[held].max() == 0 and np.abs(np.asarray(g_im))[held].max() == 0

    changed = jnp.where(held, y * 10 + 1.0, y)
    other = setup(task, op, changed, 0)
    np.testing.assert_array_equal(np.asarray(other.z), np.asarray(problem.z))
    np.testing.assert_array_equal(np.asarray(other.data["y"]), np.asarray(problem.data["y"]))
    assert float(other.data["scale"]) == float(problem.data["scale"])


def test_the_choice_and_the_validation_curve_are_recorded(inpainting):
    op, y, _ = inpainting
    r = run_method("sgdip", op, y, QUICK, 0, progress=False)
    s = r.selection
    assert s["rule"] == "self-validation" and s["holdout"] == 0.1 and s["held_out"] > 0
    assert s["requested"] == {"noise_scale": "auto"} and s["candidates"] == {"noise_scale": list(NOISE_SCALES)}
    assert s["chosen"]["noise_scale"] in NOISE_SCALES and r.config["noise_scale"] == s["chosen"]["noise_scale"]
    assert len(s["pilot_validation"]) == len(NOISE_SCALES)
    errors = [s["pilot_validation"][f"noise_scale={c:g}"] for c in NOISE_SCALES]
    n = s["held_out"]  # real held-out values: one grey channel
    within = [e <= min(errors) * (1 + 1 / np.sqrt(2 * n)) for e in errors]
    assert s["chosen"]["noise_scale"] == NOISE_SCALES[len(within) - 1 - within[::-1].index(True)]
    assert r.iterations >= 30 and r.history["val"].shape == (r.iterations,)
    assert s["iteration"] == int(np.argmin(r.history["val"]))
    assert s["validation_error"] == pytest.approx(float(r.history["val"].min()))
    loaded = type(r).from_arrays(r.to_arrays(), r.metadata())
    assert loaded.selection == s
    np.testing.assert_array_equal(loaded.last_iterate, r.last_iterate)


@pytest.mark.parametrize("problem", ["mri", "inpainting"])
def test_the_choice_does_not_see_the_reference(case, inpainting, problem):
    """The reference only feeds the PSNR history: replaced by noise, the chosen settings, stopping
    iteration and image stay the same."""
    op, y, x = (case.operator(), jnp.asarray(case.y), case.x) if problem == "mri" else inpainting
    rng = np.random.default_rng(0)
    noise = (
        (rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape)) if np.iscomplexobj(x) else rng.normal(size=x.shape)
    )
    a = run_method("sgdip", op, y, QUICK, 0, target=x, progress=False)
    b = run_method("sgdip", op, y, QUICK, 0, target=noise.astype(x.dtype), progress=False)
    assert a.selection == b.selection
    np.testing.assert_array_equal(a.image, b.image)


def test_mri_takes_its_preset_noise_scale_and_self_validation_stops_it(case):
    r = run_method("sgdip", case.operator(), jnp.asarray(case.y), {**QUICK, "restart_before": 0.0}, 0, progress=False)
    assert "chosen" not in r.selection and r.config["noise_scale"] == AUTO["noise_scale"][1]
    assert r.selection["iteration"] == int(np.argmin(r.history["val"]))


def test_mri_restarts_with_the_larger_scale_when_self_validation_stops_early(case):
    """A run whose smallest held-out error comes before ``restart_before * iterations`` is run again
    from the same start with ``LOW_SNR_NOISE_SCALE``: the same run as that fixed scale's, recorded as
    chosen; a later stop keeps the preset and its run."""
    op, y = case.operator(), jnp.asarray(case.y)
    first = run_method("sgdip", op, y, {**QUICK, "restart_before": 0.0}, 0, progress=False)
    stop = first.selection["iteration"]
    assert 0 <= stop < QUICK["iterations"] - 1  # the case stops before the last step
    kept = run_method("sgdip", op, y, {**QUICK, "restart_before": stop / 30}, 0, progress=False)
    restarted = run_method("sgdip", op, y, {**QUICK, "restart_before": (stop + 1) / 30}, 0, progress=False)
    fixed = run_method("sgdip", op, y, {**QUICK, "noise_scale": LOW_SNR_NOISE_SCALE}, 0, progress=False)
    preset = AUTO["noise_scale"][1]
    for r, threshold, scale in ((kept, stop, preset), (restarted, stop + 1, LOW_SNR_NOISE_SCALE)):
        assert r.selection["requested"] == {"noise_scale": "auto"} and r.selection["first_stop"] == stop
        assert r.selection["candidates"] == {"noise_scale": [preset, LOW_SNR_NOISE_SCALE]}
        assert r.selection["restart_before"] == threshold and r.selection["chosen"] == {"noise_scale": scale}
        assert r.config["noise_scale"] == scale and r.warm_start.chosen == {"noise_scale": scale}
    np.testing.assert_array_equal(kept.image, first.image)
    np.testing.assert_array_equal(restarted.image, fixed.image)
    np.testing.assert_array_equal(restarted.history["val"], fixed.history["val"])
    assert restarted.selection["iteration"] == fixed.selection["iteration"]
    assert restarted.wall_time > fixed.wall_time  # both runs are counted


def test_a_batch_restarts_only_its_early_problems(case):
    """In a batch each problem restarts or keeps its preset as it would alone."""
    other = sample_mri(size=32, coils=4, acceleration=4, snr_db=10, seed=1)
    ops, ys = [case.operator(), other.operator()], [jnp.asarray(case.y), jnp.asarray(other.y)]
    config = SGDIPConfig(**{**QUICK, "restart_before": 0.0})
    stops = [
        run_method("sgdip", o, y, config, s, progress=False).selection["iteration"] for o, y, s in zip(ops, ys, [0, 1])
    ]
    assert stops[0] != stops[1], stops
    config = SGDIPConfig(**{**QUICK, "restart_before": (max(stops) + min(stops)) / 2 / 30 + 1e-3})
    batch = run_dip_batch([sgdip_task(config)] * 2, ops, ys, [0, 1], progress=False)
    chosen = [r.selection["chosen"]["noise_scale"] for r in batch]
    assert sorted(chosen) == [AUTO["noise_scale"][1], LOW_SNR_NOISE_SCALE]
    for r, op, y, seed in zip(batch, ops, ys, [0, 1]):
        alone = run_method("sgdip", op, y, config, seed, progress=False)
        assert r.selection["chosen"] == alone.selection["chosen"]
        n = min(r.iterations, alone.iterations)
        np.testing.assert_allclose(r.history["val"][:n], alone.history["val"][:n], rtol=3e-2)


def test_fixed_settings_and_no_holdout_still_work(case):
    op, y = case.operator(), jnp.asarray(case.y)
    fixed = run_method("sgdip", op, y, {**QUICK, "noise_scale": 0.3}, 0, progress=False)
    assert "chosen" not in fixed.selection and fixed.config["noise_scale"] == 0.3 and fixed.iterations >= 30
    plain = run_method("sgdip", op, y, {**QUICK, "holdout": 0.0}, 0, progress=False)
    assert plain.selection is None and "val" not in plain.history
    np.testing.assert_array_equal(plain.image, plain.ema_image)
    with pytest.raises(ValueError, match="holdout"):
        SGDIPConfig(holdout=0.7)


def test_a_batch_chooses_per_problem_as_alone(inpainting):
    """Batched problems choose their settings independently, as each would alone."""
    other = _inpainting("astronaut", seed=1)
    ops, ys = [inpainting[0], other[0]], [inpainting[1], other[1]]
    config = SGDIPConfig(**QUICK)
    tasks = [sgdip_task(config)] * 2
    batch = run_dip_batch(tasks, ops, ys, [0, 1], progress=False)
    for r, op, y, seed in zip(batch, ops, ys, [0, 1]):
        alone = run_method("sgdip", op, y, config, seed, progress=False)
        assert r.selection["chosen"] == alone.selection["chosen"]
        assert r.selection["pilot_validation"] == pytest.approx(alone.selection["pilot_validation"], rel=1e-3)
        # rounding differences of the batched convolutions grow over the steps (L1 terms' sign gradients)
        n = min(r.iterations, alone.iterations)  # a batch is extended while any of its problems improves
        np.testing.assert_allclose(r.history["val"][:n], alone.history["val"][:n], rtol=3e-2)


@pytest.mark.xla_optimized
@pytest.mark.slow
def test_self_validated_default_is_near_the_best_candidate():
    """On a small open case the self-validated choice is within 0.3 dB of the best of its candidates
    (each run alone with the same held-out entries; the best by PSNR is an oracle)."""
    x = np.asarray(center_crop(sample_image("camera"), 48, axes=(0, 1)))
    mask, _ = bernoulli_pixels((48, 48), 0.5, seed=0)
    op = Inpainting.create(mask)
    y = op(jnp.asarray(x))
    config = {"network": {"name": "unet2", "base": 8}, "iterations": 300, "chunk": 50}
    auto = run_method("sgdip", op, y, config, 0, progress=False)
    fixed = {c: run_method("sgdip", op, y, {**config, "noise_scale": c}, 0, progress=False) for c in NOISE_SCALES}
    scores = {c: float(psnr(r.image, ref=x)) for c, r in fixed.items()}
    print(f"candidates {scores}, chosen {auto.selection['chosen']}: {float(psnr(auto.image, ref=x)):.2f} dB")
    assert float(psnr(auto.image, ref=x)) >= max(scores.values()) - 0.3


def test_one_standard_error_rule_keeps_the_most_regularising_candidate_within_reach():
    """Candidates ordered least to most regularising: the last whose error is within one standard
    error (relative 1 / sqrt(2 n), n real held-out values) of the smallest; per problem in a batch."""
    from sgdip_jax.methods.common import one_standard_error_choice

    y_val = np.zeros((2, 50), np.complex64)
    y_val[:, :50] = 1  # n = 100 real values: one standard error is 1 / sqrt(200) = 7.1 %
    scores = np.array([[1.00, 1.00], [1.05, 1.20], [1.10, 1.02]])
    assert list(one_standard_error_choice(scores, y_val)) == [1, 2]
    assert one_standard_error_choice(scores[:, 0], y_val[0]) == 1
    assert one_standard_error_choice(np.array([2.0, 1.0, 3.0]), y_val[0]) == 1  # none within: the smallest


def _toy_config(iterations, validate=None):
    def loss_fn(params, net_state, z, key, data):
        image = params["w"] * z[0]
        return jnp.sum((image - data["y"]) ** 2), {"image": image, "net_state": net_state, "terms": {}}

    return engine.EngineConfig(
        loss_fn=loss_fn, iterations=iterations, optimizer=optax.adam(0.05), chunk=7, validate=validate, loop="scan"
    )


def test_engine_continues_a_run_exactly_and_compiles_once():
    """``run(state=...)`` for 30 more steps equals one run of 50; the selection keeps the EMA image
    with the smallest validation error; a second run of the same config reuses its program."""
    y = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
    args = ({"w": jnp.zeros((3, 4))}, {}, jnp.ones((1, 3, 4)), jax.random.PRNGKey(0), {"y": y})
    target_val = jnp.full((3, 4), 0.3)
    validate = lambda ema, data: jnp.mean((ema - target_val) ** 2)  # noqa: E731
    whole = engine.run(_toy_config(50, validate), *args, progress=False)
    engine._COMPILED.clear()
    first = engine.run(_toy_config(20, validate), *args, progress=False)
    config = _toy_config(30, validate)
    rest = engine.run(config, None, None, None, args[3], args[4], state=first.state, progress=False)
    assert len(engine._COMPILED) == 2  # the two configs (the validate functions are the same object)
    engine.run(config, *args, progress=False)
    assert len(engine._COMPILED) == 2
    np.testing.assert_allclose(rest.state.ema, whole.state.ema, rtol=1e-6)
    val = np.concatenate([first.history["val"], rest.history["val"]])
    np.testing.assert_allclose(val, whole.history["val"], rtol=1e-6)
    assert int(whole.state.select.step) == int(np.argmin(val)) == int(rest.state.select.step)
    assert int(rest.state.step) == 50


def test_dip_takes_self_validation_too(case):
    op, y = case.operator(), jnp.asarray(case.y)
    config = {"network": {"name": "unet1", "base": 4}, "iterations": 20, "chunk": 5, "holdout": 0.1}
    r = run_method("dip", op, y, config, 0, progress=False)
    assert r.selection["iteration"] == int(np.argmin(r.history["val"])) and "chosen" not in r.selection


def test_reconstruct_batch_takes_a_dict_config_and_reports_result_image(case):
    """``reconstruct_batch`` accepts a dict config as ``run_method`` does; the outcome's image is
    the result's reported image."""
    from sgdip_jax.inputs import problem_from_case
    from sgdip_jax.reconstruct import reconstruct_batch

    problem = problem_from_case(case, source="test")
    config = {"network": {"name": "unet1", "base": 4}, "iterations": 12, "pilot": 4, "chunk": 4}
    (outcome,) = reconstruct_batch([problem], "sgdip", config, 0, progress=False)
    np.testing.assert_array_equal(outcome.image, outcome.result.image)
    assert outcome.result.config["noise_scale"] == AUTO["noise_scale"][1]
    assert outcome.held_out_error == outcome.result.selection["validation_error"]


def test_a_power_of_two_change_of_units_gives_the_same_start_exactly(case):
    """y times 2^-70 (the inner products of its least-squares fill, ``z_init="filled"``, would
    underflow float32) or 2^70: the input image, data and weights of the run are those of y, exactly
    (the fill is computed from y in units of a power of two near its peak)."""
    task = sgdip_task(SGDIPConfig(network=TINY, z_init="filled"))
    start = setup(task, case.operator(), jnp.asarray(case.y), 0)
    for factor in (2.0**-70, 2.0**70):
        other = setup(task, case.operator(), jnp.asarray(case.y) * factor, 0)
        np.testing.assert_array_equal(other.z, start.z)
        np.testing.assert_array_equal(other.data["y"], start.data["y"])
        assert float(other.data["scale"]) == float(start.data["scale"]) / factor


@pytest.mark.xla_optimized
@pytest.mark.parametrize("factor", [1e-20, 1e20])
def test_results_do_not_depend_on_the_units_of_y(case, factor):
    """k-space in other units (a power of ten, not of two) gives the same image in those units, to the
    rounding differences the iterations amplify, and the same stopping step; no norm underflows or
    overflows. (One run, no restart: a restarted run is a run at another fixed scale.)"""
    op, y, config = case.operator(), jnp.asarray(case.y), {**QUICK, "restart_before": 0.0}
    a = run_method("sgdip", op, y, config, 0, progress=False)
    b = run_method("sgdip", op, y * factor, config, 0, progress=False)
    assert np.isfinite(b.image).all() and b.selection["iteration"] == a.selection["iteration"]
    assert np.linalg.norm(b.image / factor - a.image) / np.linalg.norm(a.image) < 0.02
