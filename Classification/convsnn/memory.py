"""The memory a run needs at its configured sizes, estimated before any of it is allocated."""

from __future__ import annotations

from typing import Any

from sgtheory.errors import ConfigError

from .model import NetworkShape, layer_lists

# float32 copies of every hidden neuron's state per batch sample and step that training
# keeps at once (currents, membranes, spikes, saved for the backward pass); measured peaks
# (README, "Speed") stay below this estimate
COPIES_PER_NEURON = 3
SHD_TRAIN_SAMPLES = 8156  # samples in SHD's official training file
# ordinary sizes: the settings of a run that does not fit are named in order of how far they
# lie above these (the likeliest mistake first)
ORDINARY_SIZES = {
    "dataset.nb_units": 700,
    "dataset.nb_samples": 1000,
    "dataset.nb_classes": 20,
    "dataset.nb_steps": 350,
    "batch_size": 400,
    "dataset.nb_filters": 128,
    "dataset.padding": 10,
    "fano.repeats": 400,
}
SIZES_OF = {
    "data": ("dataset.nb_samples", "dataset.nb_classes", "dataset.nb_steps", "dataset.nb_units"),
    "network": (
        "batch_size",
        "dataset.nb_steps",
        "dataset.nb_units",
        "dataset.nb_filters",
        "dataset.padding",
    ),
    "same": ("fano.repeats", "dataset.nb_steps", "dataset.nb_units", "dataset.nb_filters"),
}


def memory_needed(cfg: Any, shape: NetworkShape) -> dict[str, int]:
    """Bytes the run needs at its configured sizes, before any of it is allocated.

    "data": a Randman dataset held whole (float32 samples x steps x units); SHD is binned per
    batch (its events are the files' size). "network": one training batch's input and hidden
    states (`COPIES_PER_NEURON` float32 values per neuron and step) plus the weights and the
    optimiser's state; "same": the repeated trials of one sample kept for the Fano factors.
    """
    ds = cfg.dataset
    lists = layer_lists(ds)
    steps, units, batch = int(ds.nb_steps), int(ds.nb_units), int(cfg.batch_size)
    neurons = sum(f * n for f, n in zip(lists["nb_filters"], shape.lengths[1:]))
    data = 0
    if ds.name == "randman":
        data = 4 * int(ds.nb_classes) * int(ds.nb_samples) * steps * units
        batch = min(batch, int(ds.nb_classes) * int(ds.nb_samples))
    else:  # no batch is larger than the official training file (or dataset.max_samples)
        cap = getattr(ds, "max_samples", None) or SHD_TRAIN_SAMPLES
        batch = min(batch, SHD_TRAIN_SAMPLES, int(cap))
    params, channels = 0, 1
    for i, (filters, kernel) in enumerate(zip(lists["nb_filters"], lists["kernel_size"])):
        params += filters * channels * kernel + filters * filters * lists["recurrent_kernel"][i]
        channels = filters
    params += shape.nb_readout_inputs * shape.nb_classes
    network = 4 * batch * steps * (2 * units + COPIES_PER_NEURON * neurons) + 4 * 4 * params
    same = int(cfg.fano.repeats) * steps * (4 * units + neurons)
    return {"data": data, "network": network, "same": same}


def available_memory() -> int | None:
    """Bytes of memory this process can still get: MemAvailable, within a cgroup's limit."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        free = info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        return None
    for limit, used in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            cap = open(limit).read().strip()
            if cap != "max":
                free = min(free, int(cap) - int(open(used).read().strip()))
            break
        except (OSError, ValueError):
            continue
    return free


def _size_settings(cfg: Any, part: str) -> str:
    """The settings that size `part` of the memory, the furthest above ordinary first."""
    named = []
    for key in SIZES_OF[part]:
        group, _, name = key.rpartition(".")
        value = getattr(getattr(cfg, group) if group else cfg, name, None)
        if value is None:
            continue
        listed = not isinstance(value, (int, float))
        size = max(value) if listed else value
        if key == "dataset.padding" and not size:
            continue
        shown = list(value) if listed else value
        named.append((size / ORDINARY_SIZES[key], f"{key}={shown}"))
    return ", ".join(text for _, text in sorted(named, key=lambda item: -item[0]))


def check_memory(cfg: Any, shape: NetworkShape, available: int | None = None) -> dict[str, int]:
    """ConfigError (with the estimate) if the run cannot fit in the memory available.

    On a CUDA device the network's part is compared with the device's free memory, the
    data with the host's.
    """
    need = memory_needed(cfg, shape)
    gib = 2.0**30
    sizes = _size_settings(cfg, max(need, key=need.get))
    parts = [("host", need["data"] + need["same"] + need["network"], available)]
    if str(cfg.device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(cfg.device))
        parts = [
            ("host", need["data"] + need["same"], available),
            ("device", need["network"], free),
        ]
    if available is None and parts[0][2] is None:
        parts[0] = ("host", parts[0][1], available_memory())
    for where, total, free in parts:
        if free is not None and total > free:
            raise ConfigError(
                f"{sizes}: the run needs about {total / gib:.3g} GiB of {where} memory (data "
                f"{need['data'] / gib:.3g} GiB, network {need['network'] / gib:.3g} GiB per "
                f"batch, trials of the Fano sample {need['same'] / gib:.3g} GiB), "
                f"{free / gib:.3g} GiB is available; use smaller sizes"
            )
    return need
