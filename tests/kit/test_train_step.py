"""A recipe's training step: the eager step is the reference, and the CUDA-graph step replays
exactly that step, leaving no trace of its warm-up."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

import labfolio  # noqa: E402
from labfolio.kit.losses import smoothed_cross_entropy  # noqa: E402
from labfolio.kit.models.vit import ViT, ViTConfig  # noqa: E402
from labfolio.kit.recipes import classify, make_optimizer, parse_config, set_lr  # noqa: E402
from labfolio.kit.recipes.train_step import GraphedTrainStep, TrainStep, make_train_step  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def _vit(device, seed=0):
    torch.manual_seed(seed)
    return ViT(ViTConfig(image_size=8, patch_size=4, num_classes=10, depth=2, width=32, heads=2)).to(device)


def _loss_of(model):
    def loss_of(inputs, targets):
        logits, _ = model(inputs)
        return smoothed_cross_entropy(logits, targets, 0.1)
    return loss_of


def _batches(device, count=6, batch=16):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 3, 8, 8, generator=generator).to(device),
             torch.randint(0, 10, (batch,), generator=generator).to(device)) for _ in range(count)]


def _train(step_kind, device, amp, capturable):
    model = _vit(device)
    optimizer = make_optimizer(model, 1e-3, 0.05, (0.9, 0.999), device, capturable=capturable)
    step = step_kind(model, _loss_of(model), optimizer, 1.0, device, amp)
    losses = [step(inputs, targets, 1e-3 * (index + 1))[0] for index, (inputs, targets) in enumerate(_batches(device))]
    return model, torch.stack(losses)


def test_the_cpu_always_takes_the_eager_step():
    model = _vit(torch.device("cpu"))
    optimizer = make_optimizer(model, 1e-3, 0.0, (0.9, 0.999), torch.device("cpu"), capturable=True)
    step = make_train_step(model, _loss_of(model), optimizer, 1.0, torch.device("cpu"), amp=True, graph=True)
    assert type(step) is TrainStep and not step.graphed
    assert not torch.is_tensor(optimizer.param_groups[0]["lr"])  # capturable means nothing off CUDA
    with pytest.raises(ValueError, match="needs a CUDA device"):
        GraphedTrainStep(model, _loss_of(model), optimizer, 1.0, torch.device("cpu"), True)


def test_the_eager_step_clips_and_updates_and_returns_the_norm_before_clipping():
    model = _vit(torch.device("cpu"))
    before = copy.deepcopy(model.state_dict())
    optimizer = make_optimizer(model, 1e-2, 0.0, (0.9, 0.999), torch.device("cpu"))
    step = TrainStep(model, _loss_of(model), optimizer, 1e-3, torch.device("cpu"), amp=False)
    inputs, targets = _batches(torch.device("cpu"), count=1)[0]
    loss, grad_norm = step(inputs, targets, 1e-2)
    assert loss.requires_grad is False and grad_norm.item() > 1e-3  # the norm as it was before the clip
    clipped = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    assert clipped.item() == pytest.approx(1e-3, rel=1e-3)
    assert any(not torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert optimizer.param_groups[0]["lr"] == 1e-2


def test_set_lr_writes_a_tensor_learning_rate_in_place():
    model = _vit(torch.device("cpu"))
    optimizer = make_optimizer(model, 1e-3, 0.0, (0.9, 0.999), torch.device("cpu"))
    rate = torch.tensor(1e-3)
    for group in optimizer.param_groups:
        group["lr"] = rate
    set_lr(optimizer, 5e-4)
    assert all(group["lr"] is rate for group in optimizer.param_groups)  # the tensor a graph reads
    assert rate.item() == pytest.approx(5e-4)


@pytest.mark.parametrize("recipe", ["classify", "lm"])
def test_a_graph_step_inside_reduce_overhead_compilation_is_refused_with_what_to_use(recipe):
    from labfolio.kit.recipes import lm

    config_class, smoke = (classify.ClassifyConfig, classify.SMOKE) if recipe == "classify" else (lm.LMConfig, lm.SMOKE)
    with pytest.raises(labfolio.ConfigError, match="use it with compile_mode default"):
        parse_config(config_class, ["--smoke", "--cuda-graph-step", "--compile-mode=reduce-overhead"], smoke, prog="t")


def test_a_failed_capture_warns_and_trains_on_eagerly_from_the_same_weights(monkeypatch):
    # the fallback's logic on CPU: a capture that dies after a warm-up step has updated the
    # weights and the AdamW state must leave the run exactly where an eager run would be
    cpu = torch.device("cpu")

    def warm_up_then_fail(self, saved):
        self._forward_backward_update(self.static_inputs, self.static_targets)
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(GraphedTrainStep, "_warm_up_and_capture", warm_up_then_fail)

    def graphed_on_cpu(model, loss_of, optimizer, grad_clip, device, amp):
        step = object.__new__(GraphedTrainStep)  # __init__ refuses a CPU device; the fallback does not care
        TrainStep.__init__(step, model, loss_of, optimizer, grad_clip, device, amp)
        step.graph, step.eager_fallback = None, False
        return step

    eager_model, eager_losses = _train(TrainStep, cpu, amp=False, capturable=False)
    with pytest.warns(RuntimeWarning, match=r"capturing the step as a CUDA graph failed .*RuntimeError: operation not "
                                            r"permitted when stream is capturing\); this run goes on with the eager"):
        fallback_model, fallback_losses = _train(graphed_on_cpu, cpu, amp=False, capturable=False)
    assert torch.equal(fallback_losses, eager_losses)
    for (name, eager), fallback in zip(eager_model.state_dict().items(), fallback_model.state_dict().values()):
        assert torch.equal(fallback, eager), name


@needs_cuda
@pytest.mark.parametrize("amp", [False, True])
def test_the_graph_step_trains_as_the_eager_step_does(amp):
    device = torch.device("cuda")
    eager_model, eager_losses = _train(TrainStep, device, amp, capturable=True)
    graph_model, graph_losses = _train(GraphedTrainStep, device, amp, capturable=True)
    tolerance = 2e-2 if amp else 1e-5
    # the first loss is from before any update: the warm-up steps left no trace
    torch.testing.assert_close(graph_losses, eager_losses, rtol=tolerance, atol=tolerance)
    for (name, eager), graphed in zip(eager_model.state_dict().items(), graph_model.state_dict().values()):
        torch.testing.assert_close(graphed, eager, rtol=tolerance, atol=tolerance, msg=name)


@needs_cuda
def test_a_graph_step_refuses_a_batch_of_another_shape():
    device = torch.device("cuda")
    model = _vit(device)
    optimizer = make_optimizer(model, 1e-3, 0.0, (0.9, 0.999), device, capturable=True)
    step = GraphedTrainStep(model, _loss_of(model), optimizer, 1.0, device, False)
    (inputs, targets), = _batches(device, count=1)
    step(inputs, targets, 1e-3)
    with pytest.raises(ValueError, match="replays one batch shape"):
        step(inputs[:8], targets[:8], 1e-3)


@needs_cuda
def test_mhc_diagnostics_after_an_evaluation_come_from_the_latest_replay():
    from labfolio.kit.connections import ConnectionConfig

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=8, patch_size=4, num_classes=10, depth=2, width=32, heads=2,
                          connection=ConnectionConfig(connection="mhc", streams=4))).to(device)
    optimizer = make_optimizer(model, 1e-2, 0.0, (0.9, 0.999), device, capturable=True)
    step = GraphedTrainStep(model, _loss_of(model), optimizer, 1.0, device, False)
    batches = _batches(device)
    step(*batches[0], 1e-2)
    assert step.recorded  # every mhc connection's coefficients, and the stream similarity
    with torch.no_grad():
        model.eval()
        model(batches[1][0])  # an evaluation forward records its own coefficients
        model.train()
    evaluation = {(id(module), name): getattr(module, name) for module, name, _ in step.recorded}
    step(*batches[2], 1e-2)
    for module, name, captured in step.recorded:
        assert getattr(module, name) is captured  # what the replay just refilled
        assert getattr(module, name) is not evaluation[(id(module), name)]
    assert set(model.diagnostics()) >= {"H_res_diag_mean", "stream_similarity"}
