import dataclasses
import json

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from experiments.dale_langevin.config import (
    AMBIENT_PAPER,
    AMBIENT_REVERSE_SDE,
    DALE_PAPER,
    DALE_REVERSE_SDE,
    SAMPLERS,
    SHARK,
    VE_EULER,
    VP_EULER,
    DaleLangevinConfig,
)
from experiments.dale_langevin.run import SHARK_DRIFT_EVALUATIONS_PER_STEP, SLUG, main, train_network
from experiments.record import results_dir
from jaxinterp.dynamics import gbm
from models.score_net import ScoreUNet

pytestmark = pytest.mark.slow  # experiment smoke runs take tens of seconds each


def _tiny_problem():
    net = ScoreUNet(1, (4,), 8, key=jr.key(0))
    data = 1.0 + jr.uniform(jr.key(1), (64, 1, 4, 4))
    process = gbm.GeometricBrownianMotion()

    def loss(net, x0, key):
        def score(x, t):
            return process.score_from_noise(net(jnp.log(x), t), x, t)

        return gbm.multiplicative_score_matching_loss(score, process, x0, key=key)

    return net, data, loss


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    net, data, loss = _tiny_problem()
    config = dataclasses.replace(
        DaleLangevinConfig.quick(), batch_size=8, learning_rate=1e-2, warmup_steps=2, checkpoint_every=2
    )
    settings = {"key": jr.key(2), "description": "test"}
    uninterrupted, full = train_network(net, loss, data, config, steps=6, checkpoint=None, **settings)
    checkpoint = tmp_path / "state.eqx"
    interrupted, first = train_network(net, loss, data, config, steps=3, checkpoint=checkpoint, **settings)
    resumed, second = train_network(net, loss, data, config, steps=6, checkpoint=checkpoint, **settings)

    def arrays(model):
        return jax.tree.leaves(eqx.filter(model, eqx.is_array))

    assert any(not np.array_equal(a, b) for a, b in zip(arrays(net), arrays(uninterrupted)))
    assert any(not np.array_equal(a, b) for a, b in zip(arrays(interrupted), arrays(uninterrupted)))
    for a, b in zip(arrays(resumed), arrays(uninterrupted)):
        np.testing.assert_array_equal(a, b)
    assert second["resumed_from_step"] == 3 and second["steps"] == 6 == len(second["loss"])
    assert second["loss"] == full["loss"] and second["final_loss"] == full["final_loss"]
    assert first["loss"] == full["loss"][:3]


def test_smoke_run_writes_results_and_keeps_dale_samples_positive():
    config = dataclasses.replace(
        DaleLangevinConfig.quick(),
        train_steps=2,
        classifier_steps=2,
        batch_size=16,
        widths=(4,),
        embed_dim=8,
        classifier_channels=(4,),
        num_levels=3,
        num_samples=16,
        eval_size=32,
        checkpoint_every=1,
        denoising_steps=2,
        curve_steps=(1,),
        curve_levels=(2,),
        curve_samples=16,
    )
    metrics = main(config)
    out = results_dir(SLUG)
    record = json.loads((out / "results.json").read_text())
    assert record["config"]["num_levels"] == 3
    assert (out / "samples_digits.png").stat().st_size > 0
    assert (out / "classes_digits.png").stat().st_size > 0
    assert (out / "results.md").read_text().count("| digits |") == 1 + len(SAMPLERS)
    digits = metrics["digits"]
    training = digits["training"]
    assert set(training) == {"classifier", "gbm", "ve", "vp"}
    assert training["classifier"]["steps"] == 2 and len(training["gbm"]["loss"]) == 2
    assert all(np.isfinite(t["final_loss"]) and t["wall_time_s"] > 0 for t in training.values())
    assert set(digits["time_breakdown_s"]) == {"classifier", "train gbm", "train ve", "train vp", "FID curve"} | {
        f"sample {name}" for name in SAMPLERS
    }
    assert 0.0 <= digits["real_test_recognisable_fraction"] <= 1.0
    samplers = digits["samplers"]
    assert set(samplers) == {"training images (reference)", *SAMPLERS}
    paper_nfe = {DALE_PAPER: 3 + 2, AMBIENT_PAPER: 3 * config.ambient_steps_per_level + 2}
    for name in (DALE_PAPER, DALE_REVERSE_SDE, AMBIENT_PAPER, AMBIENT_REVERSE_SDE, VE_EULER, VP_EULER):
        assert samplers[name]["nfe"] == paper_nfe.get(name, 3)
    assert samplers[SHARK]["nfe"] >= 3
    for name in (DALE_PAPER, DALE_REVERSE_SDE):
        assert samplers[name]["positive_fraction"] == 1.0 and samplers[name]["min_value"] > 0
    for result in samplers.values():
        assert np.isfinite(result["fid"]) and result["fid"] >= 0
        assert 0.0 <= result["recognisable_fraction"] <= 1.0
        assert sum(result["recognised_class_counts"]) == round(result["recognisable_fraction"] * 16)
    assert samplers[VP_EULER]["fid_vs_vp"] == 1.0
    # the FID curve: both curve samplers after 1 and after 2 training steps, at 2 levels
    curve = {(point["sampler"], point["steps"], point["levels"]) for point in digits["fid_curve"]}
    assert curve == {(name, steps, 2) for name in config.curve_samplers for steps in (1, 2)}
    assert all(np.isfinite(point["fid"]) for point in digits["fid_curve"])
    # a second run loads every stage's network from its checkpoint and gives the same numbers
    again = main(config)["digits"]
    assert again["fid_curve"] == digits["fid_curve"]
    assert {k: v["fid"] for k, v in again["samplers"].items()} == {k: v["fid"] for k, v in samplers.items()}
    assert all(again["training"][net]["resumed_from_step"] == 2 for net in ("gbm", "ve", "vp"))


def test_sampler_names_and_the_paper_schedule_are_checked():
    with pytest.raises(ValueError, match="unknown samplers"):
        DaleLangevinConfig(samplers=("Dale",))
    with pytest.raises(ValueError, match="image_size"):
        DaleLangevinConfig(image_size=10)
    # the official MNIST schedule at 1,000 levels; at 100 levels the step and the decay compound over ten levels
    assert DaleLangevinConfig().paper_schedule() == {
        "dale_step": 6.165e-4,
        "ambient_step": 1.438e-4,
        "noise_decay": 0.995,
    }
    coarse = dataclasses.replace(DaleLangevinConfig(), num_levels=100).paper_schedule()
    assert coarse["dale_step"] == pytest.approx(6.165e-3) and coarse["noise_decay"] == pytest.approx(0.995**10)


def test_shark_nfe_count_used_by_the_experiment():
    calls = []
    process = gbm.GeometricBrownianMotion()
    exact = gbm.log_normal_marginal_score(process, 0.3, 0.2)

    def counted_score(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return exact(x, t)

    solve = jax.jit(
        lambda key: gbm.reverse_sde_sample(
            counted_score,
            process,
            jnp.full((1, 1), 1.3),
            key=key,
            solver=diffrax.ShARK(),
            stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-2),
        )
    )
    _, steps = jax.block_until_ready(solve(jr.key(0)))
    assert len(calls) == SHARK_DRIFT_EVALUATIONS_PER_STEP * int(steps) + 1
