"""Each image its own scheduler within one pipeline call, so styles that differ in scheduler share a batch.

Why: the catalogue's 16 styles use five schedulers (DPM++ 2M, Euler, Euler ancestral, DDIM, UniPC) at the same
steps and size. With the scheduler in the batch key, a Triton batch holding several styles (one order's, or
several customers') became one pipeline call per scheduler: smaller, less efficient UNet calls, the case batching
across customers is meant to avoid.

How: the pipeline gets a stand-in scheduler (`RowSchedulers`) whose timesteps are the step numbers 0..n-1. Each
image keeps its own scheduler, whose state (step index, a multistep solver's history, an ancestral sampler's
generator) only ever sees its own images, exactly as in a call of its own:
- the starting noise is scaled per image by its scheduler's init_noise_sigma (`RowScale`);
- scale_model_input and step run per scheduler on that scheduler's rows, with the generators of its images;
- a forward pre-hook on the UNet replaces the step number with each row's own timestep. The UNet takes one
  timestep per row, so all images still denoise in one UNet call a step.
The schedulers must agree on the number of timesteps (`timestep_count`); batches whose schedulers do not are
split by it. A call's timesteps reach the UNet as float32 per row: the same time embedding as a scalar (the
UNet converts timesteps to float32 before embedding), and one input signature for CUDA graphs whatever the
scheduler.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch


class RowScale:
    """A per-image factor the pipeline multiplies its starting noise by (`latents * init_noise_sigma`): each
    image's rows times its own float, as that image's scheduler alone would give."""

    def __init__(self, factors: Sequence[float]) -> None:
        self.factors = list(factors)

    def __rmul__(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([latents[row : row + 1] * factor for row, factor in enumerate(self.factors)])


class RowSchedulers:
    """The scheduler every pipeline call of the renderer sees: one scheduler object per distinct name among the
    call's images, `images_of[k]` the images scheduler k denoises. With one scheduler, each method hands the
    whole batch to it, as the plain pipeline would."""

    order = 1

    def __init__(self, schedulers: Sequence, images_of: Sequence[Sequence[int]]) -> None:
        self.schedulers = list(schedulers)
        self.images_of = [list(images) for images in images_of]
        self.image_count = sum(len(images) for images in self.images_of)
        self.timesteps = torch.arange(0)
        self.row_timesteps: list[torch.Tensor] = []  # per step: each image's own timestep
        # Each scheduler's timesteps on the host, as its step and scale_model_input get them: DDIM indexes its host
        # tensors with the timestep, which with a GPU timestep makes the host wait for the GPU every step.
        self.host_timesteps: list[torch.Tensor] = []
        # Which rows show scheduler k's images, by (k, row count): made once a call, not once a step, since a tensor
        # copied from the host makes the host wait for the GPU to finish the step before.
        self._rows_of: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def init_noise_sigma(self):
        if len(self.schedulers) == 1:
            return self.schedulers[0].init_noise_sigma
        factors = [0.0] * self.image_count
        for scheduler, images in zip(self.schedulers, self.images_of, strict=True):
            for image in images:
                factors[image] = float(scheduler.init_noise_sigma)
        return RowScale(factors)

    def set_timesteps(self, num_inference_steps: int, device=None, **options) -> None:
        for scheduler in self.schedulers:
            scheduler.set_timesteps(num_inference_steps, device=device, **options)
        counts = {len(scheduler.timesteps) for scheduler in self.schedulers}
        if len(counts) != 1:
            raise ValueError(f"schedulers with different timestep counts ({sorted(counts)}) cannot share a call")
        steps = counts.pop()
        self.timesteps = torch.arange(steps)  # on the CPU: the step number is read without a device sync
        per_image = torch.empty(steps, self.image_count, dtype=torch.float32, device=device)
        for scheduler, images in zip(self.schedulers, self.images_of, strict=True):
            per_image[:, images] = scheduler.timesteps.to(device=device, dtype=torch.float32)[:, None]
        self.row_timesteps = list(per_image)
        self.host_timesteps = [scheduler.timesteps.cpu() for scheduler in self.schedulers]

    def set_begin_index(self, begin_index: int = 0) -> None:
        for scheduler in self.schedulers:
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(begin_index)

    def scale_model_input(self, sample: torch.Tensor, step) -> torch.Tensor:
        index = int(step)
        return self._per_scheduler(lambda which, rows: self.schedulers[which].scale_model_input(
            rows, self.host_timesteps[which][index]), sample)

    def step(self, model_output: torch.Tensor, step, sample: torch.Tensor, eta: float = 0.0, generator=None,
             return_dict: bool = True, **options):
        index = int(step)
        latents = self._per_scheduler(lambda which, outputs, rows: self._step_one(
            which, outputs, rows, index, eta, generator, options), model_output, sample)
        return (latents,) if not return_dict else _Output(latents)

    def _step_one(self, which: int, model_output: torch.Tensor, sample: torch.Tensor, index: int, eta: float,
                  generator, options: dict) -> torch.Tensor:
        """Scheduler `which` steps its own images, with what the pipeline would pass it alone: eta and its
        images' generators where its step takes them."""
        scheduler, images = self.schedulers[which], self.images_of[which]
        accepted = inspect.signature(scheduler.step).parameters
        kwargs = {"eta": eta} if "eta" in accepted else {}
        if "generator" in accepted:
            kwargs["generator"] = [generator[image] for image in images] if isinstance(generator, list) else generator
        return scheduler.step(model_output, self.host_timesteps[which][index], sample, **kwargs, **options,
                              return_dict=False)[0]

    def unet_timesteps(self, step, rows: int) -> torch.Tensor:
        """The UNet's timestep argument for step number `step`: each row's own (the rows repeat the images, twice
        with classifier-free guidance)."""
        per_image = self.row_timesteps[int(step)]
        return per_image.repeat(rows // self.image_count)

    def _per_scheduler(self, apply, *tensors: torch.Tensor) -> torch.Tensor:
        """apply(k, *rows) for each scheduler k, with the rows of `tensors` that show its images (the rows repeat the
        images, twice with guidance), the results put back in row order. One scheduler: the tensors whole."""
        if len(self.schedulers) == 1:
            return apply(0, *tensors)
        count, device = tensors[0].shape[0], tensors[0].device
        parts = []
        for which in range(len(self.schedulers)):
            rows = self._rows(which, count, device)
            parts.append((rows, apply(which, *(tensor[rows] for tensor in tensors))))
        return _scatter(parts, count)

    def _rows(self, which: int, count: int, device: torch.device) -> torch.Tensor:
        key = (which, count)
        if key not in self._rows_of:
            copies = range(count // self.image_count)
            rows = [copy * self.image_count + image for copy in copies for image in self.images_of[which]]
            self._rows_of[key] = torch.tensor(rows, device=device)
        return self._rows_of[key]


class _Output:
    def __init__(self, prev_sample: torch.Tensor) -> None:
        self.prev_sample = prev_sample


def _scatter(parts: list[tuple[torch.Tensor, torch.Tensor]], rows: int) -> torch.Tensor:
    """Each part's rows back in their places."""
    dtype = parts[0][1].dtype
    for _, values in parts[1:]:
        dtype = torch.promote_types(dtype, values.dtype)
    first = parts[0][1]
    out = torch.empty((rows, *first.shape[1:]), dtype=dtype, device=first.device)
    for indices, values in parts:
        out[indices] = values.to(dtype)
    return out


class RowTimesteps:
    """A forward pre-hook on the UNet: while a RowSchedulers call runs, the timestep the pipeline passes (a step
    number) becomes each row's own timestep."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.schedulers: RowSchedulers | None = None
        unet.register_forward_pre_hook(self._replace, with_kwargs=True)

    @torch._dynamo.disable  # outside any compiled graph: it reads which step of which call this is
    def _replace(self, module: torch.nn.Module, args: tuple, kwargs: dict):
        schedulers = self.schedulers
        if schedulers is None:
            return None
        sample = args[0] if args else kwargs["sample"]
        if len(args) > 1:
            return (sample, schedulers.unet_timesteps(args[1], sample.shape[0]), *args[2:]), kwargs
        return args, {**kwargs, "timestep": schedulers.unet_timesteps(kwargs["timestep"], sample.shape[0])}


class SchedulerSet:
    """The pipeline's own scheduler ("") and each named one, built once; `for_call` groups a call's images by
    scheduler name."""

    def __init__(self, default, build) -> None:
        self._built = {"": default}
        self._build = build  # name -> a new scheduler of that kind
        self._counts: dict[tuple[str, int], int] = {}

    def named(self, name: str):
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def timestep_count(self, name: str, steps: int) -> int:
        """How many timesteps `name` takes for `steps` steps (most take `steps`, Heun 2 × steps − 1): images share a
        call only if their schedulers agree."""
        if (name, steps) not in self._counts:
            scheduler = self.named(name)
            scheduler.set_timesteps(steps)  # every call sets its own again before it starts
            self._counts[name, steps] = len(scheduler.timesteps)
        return self._counts[name, steps]

    def for_call(self, names: Sequence[str]) -> RowSchedulers:
        images_of: dict[str, list[int]] = {}
        for image, name in enumerate(names):
            images_of.setdefault(name, []).append(image)
        return RowSchedulers([self.named(name) for name in images_of], list(images_of.values()))
