"""The optimisation engine against a plain per-step Python loop, its compile/callback budget, and
ES-WMV against a NumPy evaluation of the statistic and the patience rule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sgdip_jax import engine
from sgdip_jax.early_stopping import ESConfig, es_init, es_update
from sgdip_jax.metrics import psnr

SHAPE = (8, 8, 1)
LR, LR_Z, BETA = 0.05, 0.02, 0.9


def toy_loss(params, net_state, z, key, data):
    """A small nonlinear 'network' ``x = tanh(w z + b) + noise`` fitted to ``data["y"]``; a step counter
    stands in for mutable network state."""
    x = jnp.tanh(params["w"] * z[0] + params["b"]) + 0.05 * jax.random.normal(key, SHAPE)
    term = jnp.mean((x - data["y"]) ** 2)
    return term, {"image": x, "net_state": {"count": net_state["count"] + 1}, "terms": {"data": term}}


def toy_problem(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {"w": jax.random.normal(k[0], SHAPE), "b": jnp.zeros(SHAPE)}
    z = jax.random.uniform(k[1], (1, *SHAPE))
    data = {"y": jax.random.uniform(k[2], SHAPE)}
    return params, {"count": jnp.zeros((), jnp.int32)}, z, data


def run_toy(iterations, chunk, loop, key=jax.random.PRNGKey(7), train_z=True, loss=toy_loss, **kw):
    params, net_state, z, data = toy_problem()
    config = engine.EngineConfig(
        loss,
        iterations,
        optax.adam(LR),
        optax.adam(LR_Z) if train_z else None,
        chunk=chunk,
        loop=loop,
        ema=BETA,
        **{k: kw.pop(k) for k in ("early_stopping", "metric_image", "ssim_every") if k in kw},
    )
    return engine.run(config, params, net_state, z, key, data, progress=False, **kw)


@pytest.mark.parametrize("loop", ["scan", "python"])
def test_matches_plain_loop(loop):
    """7 iterations in chunks of 3 (so the last call has discarded steps) equal a per-step loop with
    optax, and the EMA equals the debiased average sum_i (1-b) b^(t-i) x_i / (1 - b^(t+1))."""
    T, key = 7, jax.random.PRNGKey(7)
    out = run_toy(T, 3, loop, key)

    params, net_state, z, data = toy_problem()
    opt, zopt = optax.adam(LR), optax.adam(LR_Z)
    st, zst = opt.init(params), zopt.init(z)
    images, losses = [], []
    for t in range(T):
        (loss, aux), (gp, gz) = jax.value_and_grad(toy_loss, argnums=(0, 2), has_aux=True)(
            params, net_state, z, jax.random.fold_in(key, t), data
        )
        up, st = opt.update(gp, st, params)
        params = optax.apply_updates(params, up)
        zup, zst = zopt.update(gz, zst, z)
        z = optax.apply_updates(z, zup)
        net_state = aux["net_state"]
        images.append(np.asarray(aux["image"]))
        losses.append(float(loss))
    weights = (1 - BETA) * BETA ** np.arange(T - 1, -1, -1)
    ema = np.tensordot(weights, np.stack(images), axes=1) / (1 - BETA**T)

    assert out.iterations == T and out.chunks == 3 and int(out.state.step) == T
    assert int(out.state.net_state["count"]) == T
    np.testing.assert_allclose(out.history["loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(out.state.params["w"], params["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.state.z, z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.state.image, images[-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.state.ema, ema, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loop", ["scan", "python"])
def test_batched_run_equals_separate_runs(loop):
    """Three toy problems (own weights, input, data, key) stacked on a batch axis: 7 iterations in
    chunks of 3 give each problem's separate run, history (T, B), ES-WMV detection per problem."""
    es = ESConfig(window=2, patience=2)
    problems = [toy_problem(seed) for seed in range(3)]
    keys = [jax.random.PRNGKey(10 + i) for i in range(3)]
    config = engine.EngineConfig(
        toy_loss, 7, optax.adam(LR), optax.adam(LR_Z), chunk=3, loop=loop, ema=BETA, early_stopping=es
    )
    alone = [engine.run(config, *p[:3], k, p[3], progress=False) for p, k in zip(problems, keys)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *problems)
    out = engine.run(config, *stacked[:3], jnp.stack(keys), stacked[3], batched=True, progress=False)
    assert out.history["loss"].shape == (7, 3)
    for single, part in zip(alone, out.unbatch()):
        np.testing.assert_allclose(part.history["loss"], single.history["loss"], rtol=1e-5)
        np.testing.assert_allclose(part.state.ema, single.state.ema, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(part.state.z, single.state.z, rtol=1e-5, atol=1e-6)
        assert part.stop_iteration == single.stop_iteration
    assert any(single.stop_iteration is not None for single in alone)
    with pytest.raises(ValueError, match="batched"):
        engine.run(config, *problems[0][:3], keys[0], problems[0][3], sharding=object(), progress=False)


def test_fixed_input_is_not_updated_and_caller_arrays_survive():
    params, net_state, z, data = toy_problem()
    out = engine.run(
        engine.EngineConfig(toy_loss, 5, optax.adam(LR)),
        params,
        net_state,
        z,
        jax.random.PRNGKey(0),
        data,
        progress=False,
    )
    assert out.state.z_opt_state is None
    np.testing.assert_array_equal(out.state.z, z)
    assert not np.array_equal(out.state.params["w"], params["w"])  # the caller's params are not donated


@pytest.mark.parametrize("loop", ["scan", "python"])
@pytest.mark.parametrize("chunk", [50, 64])
def test_traced_once_and_host_touched_once_per_chunk(loop, chunk):
    def counted(traces):
        def loss(*args):
            traces.append(1)  # runs when the loss is traced (or called eagerly), not per compiled step
            return toy_loss(*args)

        return loss

    calls, one_chunk, many = [], [], []
    run_toy(chunk, chunk, loop, loss=counted(one_chunk))
    out = run_toy(200, chunk, loop, loss=counted(many), callback=lambda info: calls.append(info.iteration))
    assert len(many) == len(one_chunk)  # 200 iterations trace the step as often as one chunk does
    assert len(calls) <= math.ceil(200 / chunk) and calls[-1] == 200
    assert out.chunks == len(calls)
    assert all(len(v) == 200 for v in out.history.values())


def test_callback_can_stop_the_run():
    out = run_toy(100, 10, "python", callback=lambda info: info.iteration >= 20)
    assert out.iterations == 20 and len(out.history["loss"]) == 20


def test_same_key_same_result_different_key_different():
    a = run_toy(20, 10, "python", key=jax.random.PRNGKey(1))
    b = run_toy(20, 10, "python", key=jax.random.PRNGKey(1))
    c = run_toy(20, 10, "python", key=jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a.state.ema, b.state.ema)
    assert not np.allclose(a.state.ema, c.state.ema)


def test_metrics_of_the_ema_image():
    """PSNR every step and SSIM every 4th step, of metric_image(EMA) against the target."""
    target = jnp.linspace(0, 1, 64).reshape(SHAPE)
    out = run_toy(10, 5, "python", target=target, metric_image=lambda x, data: jnp.abs(x), ssim_every=4)
    assert np.isclose(out.history["psnr"][-1], psnr(jnp.abs(out.state.ema), ref=target), atol=1e-4)
    s = out.history["ssim"]
    assert np.isnan(s[[1, 2, 3, 5, 6, 7, 9]]).all() and np.isfinite(s[[0, 4, 8]]).all()


def test_chunk_plan():
    assert engine.chunk_plan(200, 64) == (4, 50)
    assert engine.chunk_plan(7, 3) == (3, 3)
    assert engine.chunk_plan(5, 100) == (1, 5)
    with pytest.raises(ValueError, match="iterations"):
        engine.chunk_plan(0, 10)


# --------------------------------------------------------------------------- ES-WMV


def numpy_es(seq, window, patience):
    """Reference: VAR_t = population variance over the last W images averaged over entries, running
    argmin frozen once ``t - argmin >= patience``."""
    stats, best, best_t, trig_t = [], np.inf, -1, None
    for t in range(len(seq)):
        stat = np.var(seq[t - window + 1 : t + 1], axis=0).mean() if t >= window - 1 else np.nan
        stats.append(stat)
        if trig_t is None and stat < best:
            best, best_t = stat, t
        if trig_t is None and best_t >= 0 and t - best_t >= patience:
            trig_t = t
    return np.array(stats), best_t, trig_t


def test_es_wmv_matches_numpy():
    rng = np.random.default_rng(0)
    T, W, P = 120, 7, 15
    amp = 0.2 + np.abs(np.arange(T) - 40) / 40
    seq = (1.0 + amp[:, None, None] * rng.normal(size=(T, 5, 3))).astype(np.float32)
    cfg = ESConfig(window=W, patience=P)

    def body(s, xt):
        return es_update(s, xt[0], xt[1], cfg)

    state, stats = jax.lax.scan(body, es_init(cfg, seq.shape[1:]), (jnp.asarray(seq), jnp.arange(T)))
    ref, best_t, trig_t = numpy_es(seq, W, P)
    np.testing.assert_allclose(stats, ref, rtol=1e-4)
    assert trig_t is not None and bool(state.triggered)
    assert int(state.best_step) == best_t
    np.testing.assert_array_equal(state.best_image, seq[best_t])


def test_es_wmv_running_update_stays_accurate():
    """Small fluctuations (2e-4 of the mean) over 3000 steps: sums of squares would cancel entirely;
    the Welford updates drift by about 1e-3 relative."""
    rng = np.random.default_rng(1)
    T, W = 3000, 50
    seq = (5.0 + 1e-3 * rng.normal(size=(T, 4, 4))).astype(np.float32)
    cfg = ESConfig(window=W, patience=10**6)
    _, stats = jax.lax.scan(
        lambda s, xt: es_update(s, xt[0], xt[1], cfg), es_init(cfg, seq.shape[1:]), (jnp.asarray(seq), jnp.arange(T))
    )
    ref, _, _ = numpy_es(seq.astype(np.float64), W, 10**6)
    np.testing.assert_allclose(stats[W - 1 :], ref[W - 1 :], rtol=3e-3)


def test_early_stopping_stops_the_run_and_keeps_the_argmin_image():
    """Iterates converge and then diverge (noise amplitude |t - 40| / 40): ES-WMV stops the run at the
    end of the chunk where the patience runs out and returns the image of the statistic's argmin."""
    key, base = jax.random.PRNGKey(3), jnp.full(SHAPE, 0.5)

    def amp(t):
        return 0.05 + jnp.abs(t - 40.0) / 40.0

    def loss(params, net_state, z, key, data):
        t = net_state["t"]
        x = base + amp(t) * jax.random.normal(key, SHAPE)
        term = jnp.mean(params["w"] ** 2)
        return term, {"image": x, "net_state": {"t": t + 1}, "terms": {}}

    W, P, chunk = 10, 25, 20
    config = engine.EngineConfig(
        loss, 1000, optax.sgd(0.0), chunk=chunk, early_stopping=ESConfig(window=W, patience=P, stop=True)
    )
    out = engine.run(
        config, {"w": jnp.ones(3)}, {"t": jnp.zeros((), jnp.int32)}, jnp.zeros((1, 1)), key, progress=False
    )
    seq = np.stack(
        [base + amp(t) * jax.random.normal(jax.random.fold_in(key, t), SHAPE) for t in range(out.iterations)]
    )
    ref, best_t, trig_t = numpy_es(seq, W, P)
    assert trig_t is not None
    assert out.iterations == chunk * math.ceil((trig_t + 1) / chunk) < 1000
    assert out.stop_iteration == best_t
    np.testing.assert_allclose(out.history["es_stat"], ref, rtol=1e-4)
    np.testing.assert_allclose(out.stop_image, seq[best_t], rtol=1e-6)


def test_es_config_validation():
    with pytest.raises(ValueError, match="window"):
        ESConfig(window=0)
