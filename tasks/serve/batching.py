"""Micro-batching: concurrent requests are scored together in one forward pass.

A forward pass over 16 images costs little more than over one on CPU and GPU alike, so requests that
arrive within ``micro_batch_wait_ms`` of each other are collected (up to ``micro_batch_size``) and
scored by one :meth:`Detector.score` call in a worker thread, off the event loop. While a batch runs,
the next one fills. Each queued image carries the detector it was accepted for, so a reload never
changes the model under a request that is already waiting; a batch that spans a reload is scored as
one group per detector.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from tasks.model.detector import Detector

log = logging.getLogger(__name__)

Item = tuple["Detector", Image.Image, asyncio.Future]


class MicroBatcher:
    """Scores images one call at a time, or together (``enabled``); start() inside the event loop."""

    def __init__(
        self,
        max_size: int,
        wait_ms: float,
        *,
        enabled: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.max_size = max_size
        self.wait_s = wait_ms / 1000
        self.enabled = enabled
        self.on_batch = on_batch or (lambda size: None)
        self._queue: asyncio.Queue[Item] | None = None
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def score(self, detector: Detector, images: list[Image.Image]) -> list[tuple[float, np.ndarray]]:
        """(P(fake), embedding) of each image, scored by ``detector`` (one forward pass gives both)."""
        if not self.enabled or self._queue is None:
            self.on_batch(len(images))
            scores, embeddings = await asyncio.to_thread(detector.score_and_embed, images)
            return [(float(p), e) for p, e in zip(scores, embeddings, strict=True)]
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for image, future in zip(images, futures, strict=True):
            self._queue.put_nowait((detector, image, future))
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_size:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            await self._score(batch)

    async def _score(self, batch: list[Item]) -> None:
        groups: dict[int, list[Item]] = {}
        for item in batch:
            groups.setdefault(id(item[0]), []).append(item)
        for items in groups.values():
            live = [item for item in items if not item[2].done()]  # a cancelled request needs no score
            if not live:
                continue
            self.on_batch(len(live))
            try:
                scores, embeddings = await asyncio.to_thread(
                    live[0][0].score_and_embed, [image for _, image, _ in live]
                )
            except Exception as exc:
                log.exception("scoring a batch of %d images failed", len(live))
                for _, _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), p, embedding in zip(live, scores, embeddings, strict=True):
                if not future.done():
                    future.set_result((float(p), embedding))
