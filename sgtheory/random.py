"""Counter-based random numbers: every uniform draw is a pure function of where it is used.

The generator is Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers:
as easy as 1, 2, 3"; the generator of Random123, cuRAND and Triton's ``tl.rand``): a keyed
bijection of a 128-bit counter, ten rounds of 32 x 32 -> 64-bit products and XORs. A draw is

    u(seed, stream, step, element) = (word >> 8) * 2^-24,   in [0, 1), 24 bits,
    word = Philox4x32-10(counter=(element, step >> 2, stream_lo, stream_hi),
                         key=(seed_lo, seed_hi))[step & 3]

with `seed` and `stream` 64-bit, `step` a time step counted along the stream (below 2^34),
and `element` the neuron's index in its step's logical, C-contiguous order (batch, ...)
(below 2^32). So one Philox call gives one neuron four consecutive steps, whatever the
memory layout, and any backend draws any element independently, in any order: the torch
reference here (integer tensor operations, the definition), the C kernels
(``backends/native/csrc/lif_scan.c``) and the Triton kernels (``backends/triton/kernels.py``)
draw the same numbers on every device.

A `Stream` names what it draws for (a layer, a purpose such as training spikes, evaluation
trials or data, a trial) by a 64-bit id hashed from its names, and counts the steps it has
handed out, so successive forward passes draw fresh numbers. A `torch.Generator` can stand
in for a stream: then each draw (one scan, or one call of a spike operation) takes a fresh
64-bit key from it, so its state alone fixes the draws (and checkpoints of it keep
working); those keys follow torch's generator, which differs between CPU and CUDA, so only
a `Stream` draws the same numbers on every device. `GivenUniforms` feeds explicit
uniforms instead (for comparisons with other code's draws).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85  # key increments (golden ratio, sqrt(3) - 1)
PHILOX_ROUNDS = 10
MASK32 = 0xFFFFFFFF
MAX_STEPS = 1 << 34  # steps per stream: (step >> 2) fills one 32-bit counter word
MAX_ELEMENTS = 1 << 32  # elements per step: one 32-bit counter word
UNIFORM_SCALE = 2.0**-24


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of a * m for 32-bit a (int64 tensor) and constant m, with
    16-bit halves of a so that no product leaves int64's range."""
    hi16, lo16 = a >> 16, a & 0xFFFF
    p_hi, p_lo = hi16 * m, lo16 * m  # each < 2^48
    high = (p_hi + (p_lo >> 16)) >> 16
    low = (((p_hi & 0xFFFF) << 16) + p_lo) & MASK32
    return high, low


def philox4x32(
    counter: tuple[torch.Tensor, ...], key: tuple[torch.Tensor | int, torch.Tensor | int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 of four 32-bit counter words under two key words (int64 tensors or ints
    holding values in [0, 2^32), broadcast): the four output words as int64 tensors."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) for c in counter)
    k0, k1 = key
    for r in range(PHILOX_ROUNDS):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def split64(value: int) -> tuple[int, int]:
    """(low, high) 32-bit words of a value in [0, 2^64)."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"seed or stream {value!r} is outside [0, 2^64)")
    return value & MASK32, value >> 32


def words(seed: int, stream: int, steps: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
    """The 32-bit word (int64 tensor) of each (step, element) pair (broadcast)."""
    steps, elements = torch.as_tensor(steps), torch.as_tensor(elements)
    s_lo, s_hi = split64(stream)
    k0, k1 = split64(seed)
    counter = (elements, steps >> 2, torch.full_like(steps, s_lo), torch.full_like(steps, s_hi))
    out = torch.stack(philox4x32(counter, (k0, k1)))
    lane = (steps & 3).expand(torch.broadcast_shapes(steps.shape, elements.shape))
    return out.gather(0, lane.unsqueeze(0)).squeeze(0)


def to_uniform(word: torch.Tensor) -> torch.Tensor:
    """The float32 uniform of 32-bit words: its top 24 bits times 2^-24 (exact), in [0, 1)."""
    return (word >> 8).to(torch.float32) * UNIFORM_SCALE


def _check_range(first_step: int, nb_steps: int, numel: int) -> None:
    if first_step < 0 or first_step + nb_steps > MAX_STEPS:
        raise ValueError(f"steps {first_step}..{first_step + nb_steps} exceed a stream's 2^34")
    if numel > MAX_ELEMENTS:
        raise ValueError(f"{numel} elements per step exceed the counter's 2^32")


def uniform_reference(
    seed: int, stream: int, first_step: int, nb_steps: int, shape: tuple, device=None
) -> torch.Tensor:
    """Uniforms (nb_steps, *shape) of steps first_step.. by integer tensor operations: the
    definition that every backend reproduces bitwise."""
    numel = 1
    for size in shape:
        numel *= int(size)
    _check_range(first_step, nb_steps, numel)
    steps = torch.arange(first_step, first_step + nb_steps, device=device).view(-1, 1)
    elements = torch.arange(numel, device=device).view(1, -1)
    return to_uniform(words(seed, stream, steps, elements)).view(nb_steps, *shape)


def stream_id(*names: int | str) -> int:
    """A 64-bit stream id from names (layer, purpose, trial, ...): the first 8 bytes of their
    BLAKE2b hash, so that different names give unrelated streams on every platform."""
    text = "\0".join(f"{type(n).__name__}:{n}" for n in names).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Draws:
    """The uniforms of one draw: steps first_step, first_step + 1, ... of (seed, stream);
    or, with `given`, explicit uniforms (steps, ...) read from step first_step on."""

    seed: int
    stream: int
    first_step: int = 0
    given: torch.Tensor | None = None

    def uniform(self, start: int, stop: int, shape: tuple, device=None) -> torch.Tensor:
        """Uniforms (stop - start, *shape) of this draw's steps start..stop - 1, float32, by
        `uniform_reference` (the backends compute the same numbers faster)."""
        first = self.first_step + start
        if self.given is not None:
            block = self.given[first : first + stop - start]
            if block.shape[1:] != tuple(shape) or block.shape[0] != stop - start:
                raise ValueError(
                    f"given uniforms {tuple(self.given.shape)} do not cover steps "
                    f"{first}..{first + stop - start} of shape {tuple(shape)}"
                )
            return block.to(device=device, dtype=torch.float32)
        return uniform_reference(self.seed, self.stream, first, stop - start, shape, device)

    def kernel_words(self) -> tuple[int, int, int, int]:
        """(seed_lo, seed_hi, stream_lo, stream_hi): the key and the counter's upper words."""
        return (*split64(self.seed), *split64(self.stream))


class Stream:
    """A named stream of draws: seed (the key) and stream id (from `names`), and the number
    of steps handed out so far, so that each draw gets fresh steps.

    `get_state` / `set_state` save and restore that position, as a torch.Generator's do.
    """

    def __init__(self, seed: int, *names: int | str, offset: int = 0):
        self.seed = int(seed)
        split64(self.seed)
        self.names = names
        self.stream = stream_id(*names)
        self.offset = int(offset)

    def take(self, nb_steps: int) -> Draws:
        """The next `nb_steps` steps of this stream, as one draw."""
        _check_range(self.offset, nb_steps, 0)
        draws = Draws(self.seed, self.stream, self.offset)
        self.offset += int(nb_steps)
        return draws

    def get_state(self) -> torch.Tensor:
        """The position: int64 tensor [offset]."""
        return torch.tensor([self.offset], dtype=torch.int64)

    def set_state(self, state: torch.Tensor) -> None:
        """Continue from a position `get_state` returned."""
        if not (
            isinstance(state, torch.Tensor) and state.dtype == torch.int64 and state.shape == (1,)
        ):
            shape = tuple(getattr(state, "shape", ()))
            raise ValueError(f"a Stream's state is an int64 tensor of shape (1,), not {shape}")
        self.offset = int(state[0])

    def __repr__(self) -> str:
        return f"Stream(seed={self.seed}, names={self.names}, offset={self.offset})"


class GivenUniforms:
    """Explicit uniforms (steps, ...) in place of a stream, handed out step by step (a
    test-only hook: it makes a layer draw the numbers of other code, e.g. the original's).
    Scans fed this way run as the torch loop."""

    def __init__(self, uniforms: torch.Tensor):
        self.uniforms = uniforms
        self.offset = 0

    def take(self, nb_steps: int) -> Draws:
        if self.offset + nb_steps > self.uniforms.shape[0]:
            raise ValueError(
                f"only {self.uniforms.shape[0]} steps of uniforms given; "
                f"{self.offset + nb_steps} needed"
            )
        draws = Draws(0, 0, self.offset, given=self.uniforms)
        self.offset += int(nb_steps)
        return draws


def key_from(generator: torch.Generator | None) -> int:
    """A 64-bit key drawn from `generator` (torch's default one if None): two 32-bit draws."""
    device = generator.device if generator is not None else torch.device("cpu")
    lo, hi = torch.randint(0, 1 << 32, (2,), generator=generator, device=device).tolist()
    return int(lo) | (int(hi) << 32)


def take(source: Stream | GivenUniforms | torch.Generator | None, nb_steps: int) -> Draws:
    """The uniforms of the next draw of `nb_steps` steps from `source`: a Stream's next
    steps; explicit uniforms; or, from a torch.Generator (or None: torch's default one),
    steps 0.. under a fresh key drawn from it."""
    if isinstance(source, (Stream, GivenUniforms)):
        return source.take(nb_steps)
    if source is not None and not isinstance(source, torch.Generator):
        raise TypeError(
            f"a stream of draws is a Stream, GivenUniforms or torch.Generator, not {source!r}"
        )
    return Draws(key_from(source), 0, 0)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device`, seeded with `seed`: the only source of random draws."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen
