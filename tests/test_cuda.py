"""The CUDA path: skipped without a CUDA device, run where one is available."""

import json

import pytest
import torch

from vidpred.config import ModelConfig, load_config
from vidpred.models.svg import SVG, rollout

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: these tests run where one is available")

TINY = ["model.width=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "model.cond_embed=8",
        "train.batch_size=2", "train.steps_per_epoch=2", "train.epochs=1", "train.n_future=3",
        "train.log_every=1"]


@pytest.mark.parametrize("decoder", ["pixel", "cdna"])
def test_rollout_on_cuda_matches_the_cpu(decoder):
    torch.manual_seed(0)
    extra = dict(decoder="cdna", kernel_size=3, skip_frame="previous", coords=True) if decoder == "cdna" else {}
    cfg = ModelConfig(width=8, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8, condition="causal", action_lag=0,
                      **extra)
    model = SVG(cfg).eval()
    frames, conds, noise = torch.rand(2, 6, 3, 64, 64), torch.randn(2, 6, 7), torch.randn(2, 5, 4)
    with torch.no_grad():
        cpu = rollout(model, frames, conds, 2, use_posterior=False, noise=noise).pred
        gpu = rollout(model.cuda(), frames.cuda(), conds.cuda(), 2, use_posterior=False, noise=noise.cuda()).pred
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=2e-3)


def test_training_on_cuda_resolves_its_precision_and_resumes(synth_root, tmp_path):
    from vidpred.training.trainer import train

    out = tmp_path / "run"
    cfg = load_config("synth-cpu", [f"data.root={synth_root}", *TINY, "train.device=cuda", "train.amp=auto"])
    summary = train(cfg, out, progress=False)
    assert summary["steps"] == 2
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert epochs[-1]["amp"] == ("bf16" if torch.cuda.is_bf16_supported() else "none")
    longer = load_config("synth-cpu", [f"data.root={synth_root}", *TINY, "train.device=cuda", "train.amp=auto",
                                       "train.epochs=2"])
    assert train(longer, out, resume=True, progress=False)["steps"] == 4


def test_compiled_rollout_on_cuda_matches_eager():
    """train.compile / evaluate --compile on a GPU: inductor's CUDA code gives the eager frames."""
    from vidpred.runtime import CompiledOrEager

    torch.manual_seed(0)
    cfg = ModelConfig(width=8, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8, condition="causal", action_lag=0,
                      decoder="cdna", kernel_size=3, skip_frame="previous", coords=True, pose_map=True)
    model = SVG(cfg).cuda().eval()
    frames, conds = torch.rand(2, 6, 3, 64, 64).cuda(), torch.rand(2, 6, 7).cuda()
    noise = torch.randn(2, 5, 4).cuda()
    compiled = CompiledOrEager(rollout, True, torch.device("cuda"), "test")
    with torch.no_grad():
        eager = rollout(model, frames, conds, 2, use_posterior=False, noise=noise).pred
        out = compiled(model, frames, conds, 2, use_posterior=False, noise=noise).pred
    assert compiled.active
    torch.testing.assert_close(out, eager, atol=1e-4, rtol=1e-4)


def test_ssim_on_cuda_matches_the_cpu():
    """vidpred's SSIM builds its filter matrices on the frames' device."""
    from vidpred.evaluation.metrics import ssim_scores

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 2, 3, 64, 48, generator=g), torch.rand(2, 1, 2, 3, 64, 48, generator=g)
    mask = torch.rand(2, 1, 2, 64, 48, generator=g) > 0.5
    cpu = ssim_scores(pred, target, mask)
    gpu = ssim_scores(pred.cuda(), target.cuda(), mask.cuda())
    assert all(x.is_cuda for x in gpu)
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=0)


def test_planning_costs_on_cuda_match_the_cpu():
    """The model arm reads its cost on the model's device (planning/cost.py): the same costs as on the CPU."""
    import numpy as np

    from vidpred.planning import env as env_mod
    from vidpred.planning.cost import ModelPredictor

    torch.manual_seed(0)
    cfg = ModelConfig(width=8, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8, condition="causal", action_lag=0)
    model = SVG(cfg).eval()
    task = env_mod.find_tasks(0, 1)[0]
    env = env_mod.PushEnv(task)
    actions = np.random.default_rng(0).uniform(-0.03, 0.03, (4, 3, 4))
    actions[..., 2:] = (0.0, env.gripper)
    costs = {}
    for device in ("cpu", "cuda"):
        pred = ModelPredictor(model.to(device), task, 2, model_samples=2, generator=torch.Generator().manual_seed(3))
        pred.bind(env)
        costs[device] = pred(actions)
    assert costs["cuda"].shape == (4,) and np.isfinite(costs["cuda"]).all()
    np.testing.assert_allclose(costs["cuda"], costs["cpu"], atol=0.05)
