"""When the host acts: the run's episodes cut into compiled chunks, and which chunk
ends are evaluated. One rule, read by the host loop (`jaxsim.runner`) and by the pure
`train(key)` (`jaxsim.train.make_train`), so both run the same computation.

Chunks hold `chunk_episodes` episodes each; where that does not divide the run, a
last, shorter chunk holds the rest (a second compiled program of that length). An
evaluation follows every chunk that ends on a multiple of `eval_period`, and the
run's last one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    episodes: int
    chunk_episodes: int
    eval_period: int

    @classmethod
    def of(cls, config) -> "Schedule":
        return cls(config.episodes, config.chunk_episodes, config.eval_period)

    @property
    def full_chunks(self) -> int:
        return self.episodes // self.chunk_episodes

    @property
    def last_chunk(self) -> int:
        """Episodes of the last, shorter chunk; 0 when chunks divide the run."""
        return self.episodes % self.chunk_episodes

    @property
    def num_chunks(self) -> int:
        return self.full_chunks + (self.last_chunk > 0)

    def length_from(self, episode: int) -> int:
        """Episodes in the chunk that starts after `episode` episodes."""
        return min(self.chunk_episodes, self.episodes - episode)

    def lengths(self, start: int, stop: int) -> list[int]:
        """The distinct chunk lengths that training from `start` to `stop` runs."""
        found, episode = [], start
        while episode < stop:
            length = self.length_from(episode)
            if length not in found:
                found.append(length)
            episode += length
        return found

    def eval_due(self, end):
        """Whether the chunk ending after `end` episodes is followed by an evaluation;
        `end` may be a traced integer."""
        return (end % self.eval_period == 0) | (end == self.episodes)

    def on_boundary(self, episode: int) -> bool:
        """Whether `episode` ends a full chunk (where a run may stop and go on)."""
        return episode % self.chunk_episodes == 0

    def describe(self) -> str | None:
        """A line for runs whose chunks do not divide them; None where they do."""
        if not self.last_chunk:
            return None
        full = (f"{self.full_chunks} chunk{'s' * (self.full_chunks != 1)} of "
                f"{self.chunk_episodes} and " if self.full_chunks else "")
        return f"{self.episodes} episodes: {full}a last chunk of {self.last_chunk}"
