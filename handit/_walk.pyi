"""Type stub of the compiled walk; handit.walk.Walk is the same in pure Python."""
from typing import Any, Callable

class Walk:
    calls: int
    corrupt_blocks: int
    dropped: int
    first_ts: int
    last_ts: int
    def __init__(self, on_call: Callable[..., Any], on_return: Callable[..., None]) -> None: ...
    def feed(self, block: bytes) -> None: ...
    def finish(self, end_ts: int) -> None: ...
