"""The eager UNet's forward replayed as CUDA graphs (render modes `graphed` and `graphed-fp8`): no
torch.compile, so an instance is ready after seconds of capture instead of minutes of cold compile.

Why: a denoising step launches the UNet's kernels one by one (thousands for SDXL), and at small
batches the GPU waits on those launches; a replayed graph is one launch. The compiled modes also
fuse kernels, but their cold compile costs minutes per instance start (bench/train_results.md: an
SDXL compile did not finish in 280 s), which an autoscaled renderer pays on every new pod.

How a capture stays valid:
- one graph per input signature (shapes and dtypes of the latents, timestep, text embeddings and
  SDXL's added conditioning); a pipeline call of another batch size or image size captures once more,
  up to MAX_GRAPHS, then runs eager;
- the inputs are copied into the graph's own buffers before each replay, and its output is cloned, so
  the next replay (graphs share one memory pool) cannot overwrite what the scheduler still reads;
- a subject's LoRA is fused into the weights in place and FP8 weights are requantized in place
  (services/renderer/adapters.py, fp8.py): the graphs read the same buffers, so they stay valid;
- anything the graph did not capture (a ControlNet residual, an attention mask, a CPU tensor) runs
  eager.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

MAX_GRAPHS = 32  # input signatures kept per instance: batch sizes 1..8 at a few image sizes
# Keyword arguments a graph reproduces; others (ControlNet residuals, masks, class labels) run eager
# whenever they are set.
_CAPTURED = frozenset({"added_cond_kwargs", "return_dict"})

log = logging.getLogger(__name__)


def graph_inputs(sample, timestep, encoder_hidden_states, options: dict) -> dict[str, torch.Tensor] | None:
    """The call's tensors by name (SDXL's added conditioning as `added.<name>`), or None where a graph
    cannot reproduce the call (an option it did not capture, a timestep given as a number) and it must
    run eager."""
    if any(_is_set(value) for name, value in options.items() if name not in _CAPTURED):
        return None
    inputs = {"sample": sample, "timestep": timestep, "encoder_hidden_states": encoder_hidden_states}
    added = options.get("added_cond_kwargs") or {}
    inputs.update({f"added.{name}": value for name, value in sorted(added.items())})
    return inputs if all(isinstance(value, torch.Tensor) for value in inputs.values()) else None


def _is_set(value) -> bool:
    """None and empty containers (a pipeline's `cross_attention_kwargs={}`) change nothing in the call."""
    return value is not None and not (isinstance(value, dict | tuple | list) and len(value) == 0)


def on_gpu(inputs: dict[str, torch.Tensor]) -> bool:
    return all(value.device.type == "cuda" for value in inputs.values())


def signature(inputs: dict[str, torch.Tensor]) -> tuple:
    return tuple((name, tuple(value.shape), value.dtype) for name, value in inputs.items())


def unet_arguments(inputs: dict[str, torch.Tensor]) -> dict:
    """graph_inputs' tensors as the UNet's keyword arguments again."""
    added = {name.removeprefix("added."): value for name, value in inputs.items() if name.startswith("added.")}
    return {"sample": inputs["sample"], "timestep": inputs["timestep"],
            "encoder_hidden_states": inputs["encoder_hidden_states"], "added_cond_kwargs": added or None}


class _Graph:
    """One captured forward: its input buffers, the graph, and the output buffer it writes."""

    def __init__(self, forward: Callable, inputs: dict[str, torch.Tensor], pool) -> None:
        self.buffers = {name: value.detach().clone(memory_format=torch.contiguous_format)
                        for name, value in inputs.items()}
        arguments = unet_arguments(self.buffers)
        side_stream = torch.cuda.Stream()
        side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side_stream):  # lazy initialisation and library workspaces, outside the capture
            forward(**arguments, return_dict=False)
        torch.cuda.current_stream().wait_stream(side_stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = forward(**arguments, return_dict=False)[0]

    def replay(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        for name, value in inputs.items():
            self.buffers[name].copy_(value)
        self.graph.replay()
        return self.output.clone()


class UNetGraphs:
    """Replaces `unet.forward` in place (the pipeline, the adapter stores and the FP8 layers keep reaching
    the UNet and its layers by name); each call replays the graph of its input signature."""

    def __init__(self, unet: torch.nn.Module, max_graphs: int = MAX_GRAPHS) -> None:
        if unet.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the UNet on a CUDA GPU; it is on {unet.device.type} "
                             "(use the eager or compiled modes there)")
        self.eager_forward = unet.forward
        self.max_graphs = max_graphs
        self.graphs: dict[tuple, _Graph] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.eager_calls = 0
        unet.forward = self.forward

    def forward(self, sample, timestep, encoder_hidden_states, **options):
        inputs = graph_inputs(sample, timestep, encoder_hidden_states, options)
        graph = self._graph_for(inputs) if inputs is not None and on_gpu(inputs) else None
        if graph is None:
            self.eager_calls += 1
            return self.eager_forward(sample, timestep, encoder_hidden_states, **options)
        output = graph.replay(inputs)
        return UNet2DConditionOutput(sample=output) if options.get("return_dict", True) else (output,)

    def _graph_for(self, inputs: dict[str, torch.Tensor]) -> _Graph | None:
        key = signature(inputs)
        graph = self.graphs.get(key)
        if graph is None and len(self.graphs) < self.max_graphs:
            graph = self.graphs[key] = _Graph(self.eager_forward, inputs, self.pool)
            log.info("captured the UNet as CUDA graph %d of %d (%s)", len(self.graphs), self.max_graphs,
                     ", ".join(f"{name} {list(shape)}" for name, shape, _ in key))
        elif graph is None and self.eager_calls == 0:
            log.warning("%d CUDA graphs captured, the limit: calls of new shapes run eager", self.max_graphs)
        return graph

