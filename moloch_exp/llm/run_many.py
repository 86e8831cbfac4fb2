"""Many calls at once from synchronous code: the async bridge, the progress bar, and stopping early.

:func:`run_many` runs ``worker(item, abort)`` for every item on one event loop (``asyncio.run``; from
inside a running loop, e.g. Jupyter, on a helper thread), at most ``concurrency`` at a time, and returns
the results in order. Items start in list order and each keeps its place through its re-asks, so a
caller's send order (shared prompt prefixes, ``audience.layout=shared_prefix_first``) holds on a
one-slot server.

It stops early, with one line saying how many results of ``desc`` were completed (and cached):

- a ``ServiceError`` (a managed server died) cancels every other request at once and retries none,
  except attempts already on the wire: those end (at once, against a dead server) and an answer that
  was on its way is kept;
- a ``BudgetExceeded`` lets the requests in flight finish and sends no new one; the error carries
  ``.partial``, the results so far (``None`` where missing).

The progress bar (tqdm, ``progress=True``) is redrawn by a ticker every ``refresh_s``, not per call.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from tqdm.auto import tqdm

from moloch_exp.errors import ServiceError

from .ledger import BudgetExceeded
from .retrying import Aborted, StopSignal

T = TypeVar("T")


def run_many(items: Sequence[Any], worker: Callable[[Any, StopSignal], Awaitable[T]], desc: str,
             concurrency: int, progress: bool, on_exit: Callable[[], Awaitable[None]],
             refresh_s: float = 0.5) -> list[T]:
    """A result's ``ok`` and ``cached`` are counted on the bar. ``on_exit``: awaited on the loop at the end
    (closing its connections)."""
    items = list(items)

    async def main() -> list[T]:
        abort = StopSignal()
        out: list[Any] = [None] * len(items)
        budget_error: list[BudgetExceeded] = []
        service_error: list[ServiceError] = []
        tasks: list[asyncio.Task] = []
        counts = {"done": 0, "cached": 0, "not_ok": 0}
        in_order = asyncio.Semaphore(concurrency)

        async def run(i: int, item: Any) -> None:
            try:
                async with in_order:
                    res = await worker(item, abort)
            except BudgetExceeded as e:
                abort.set()
                budget_error.append(e)
                return
            except ServiceError as e:  # the server died: stop every request now, retry none
                abort.set()
                if not service_error:  # once: an attempt spared now must not be cancelled later
                    for t in tasks:
                        if t is not asyncio.current_task() and t not in abort.on_the_wire:
                            t.cancel()
                service_error.append(e)
                return
            except Aborted:
                return
            out[i] = res
            counts["done"] += 1
            counts["cached"] += bool(res.cached)
            counts["not_ok"] += not res.ok

        bar = tqdm(total=len(items), desc=desc, unit="call", dynamic_ncols=True, disable=not progress)

        def redraw() -> None:
            bar.update(counts["done"] - bar.n)
            bar.set_postfix(cached=counts["cached"], not_ok=counts["not_ok"], refresh=False)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(refresh_s)
                redraw()

        tasks.extend(asyncio.create_task(run(i, item)) for i, item in enumerate(items))
        ticking = asyncio.create_task(ticker()) if progress else None
        try:
            settled = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if ticking is not None:
                ticking.cancel()
            redraw()
            bar.close()
            await on_exit()
        bug = next((e for e in settled if isinstance(e, BaseException) and not isinstance(e, asyncio.CancelledError)),
                   None)
        if bug is not None:
            raise bug
        done = sum(x is not None for x in out)
        if service_error:
            raise type(service_error[0])(f"{service_error[0]} ({done}/{len(items)} results of '{desc}' completed and cached)")
        if budget_error:
            err = BudgetExceeded(f"{budget_error[0]} ({done}/{len(items)} results of '{desc}' completed and cached)")
            err.partial = out  # type: ignore[attr-defined]
            raise err
        return out

    return run_sync(main)


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run`` from sync code; from inside a running loop (e.g. Jupyter) use a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(factory())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = e

    t = threading.Thread(target=target, name="moloch-llm-batch")
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]
