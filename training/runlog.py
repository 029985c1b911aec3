"""run.log: what the console showed while training, warnings and log records included, kept in the run dir so a
remote run can be read afterwards. The console itself sees exactly what it would without it."""

import contextlib
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from kerasline.errors import Preempted, UserError

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # a progress bar's colours on a terminal


class Tee:
    """A console stream that also appends each finished line to the log: a progress bar redrawn in place
    (carriage returns) is logged as its last state, without colours. Anything else is the console's own."""

    def __init__(self, console: TextIO, log: TextIO):
        self.console, self.log, self.pending = console, log, ""

    def write(self, text: str) -> int:
        written = self.console.write(text)
        if not self.log.closed:  # a handler may keep the stream after the run: it then writes to the console only
            *lines, self.pending = (self.pending + text).split("\n")
            with contextlib.suppress(OSError):  # a full disk loses log lines, never the console's
                for line in lines:
                    self.log.write(ANSI.sub("", line.rsplit("\r", 1)[-1]) + "\n")
        return written

    def close_log(self) -> None:
        """Logs a last line left without its newline (a bar cut short)."""
        if self.pending:
            self.log.write(ANSI.sub("", self.pending.rsplit("\r", 1)[-1]) + "\n")
            self.pending = ""

    def __getattr__(self, name: str):  # isatty (Keras asks it how to draw its bar), fileno, encoding, flush...
        return getattr(self.console, name)


@contextlib.contextmanager
def console_log(path: Path, enabled: bool = True) -> Iterator[None]:
    """sys.stdout and sys.stderr (print, Keras, warnings) and the logging handlers writing to them are teed into
    `path`, appended to (a resumed run adds its attempt under a header line). An error that ends the block is
    logged too: the CLI prints it only after training returns. enabled: False on the non-chief workers."""
    if not enabled:
        yield
        return
    with path.open("a", encoding="utf-8", buffering=1) as log:  # line-buffered: a killed run keeps its lines
        log.write(f"--- {datetime.now(UTC).isoformat(timespec='seconds')} {' '.join(sys.argv)}\n")
        try:
            with _teed(log):
                yield
        except Exception as e:
            expected = isinstance(e, UserError | Preempted)  # one line; anything else with its traceback
            with contextlib.suppress(OSError):  # a full disk: the error reaches the console all the same
                log.writelines(traceback.format_exception_only(e) if expected else traceback.format_exception(e))
            raise


@contextlib.contextmanager
def _teed(log: TextIO) -> Iterator[None]:
    tees = {id(stream): Tee(stream, log) for stream in (sys.stdout, sys.stderr)}
    handlers = [h for h in _stream_handlers() if id(h.stream) in tees]
    saved = sys.stdout, sys.stderr, [h.stream for h in handlers]
    sys.stdout, sys.stderr = tees[id(sys.stdout)], tees[id(sys.stderr)]
    for handler in handlers:
        handler.setStream(tees[id(handler.stream)])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved[0], saved[1]
        for handler, stream in zip(handlers, saved[2], strict=True):
            handler.setStream(stream)
        for tee in tees.values():
            tee.close_log()


def _stream_handlers() -> list[logging.StreamHandler]:
    """Every logging handler that writes to a stream (TensorFlow's own writes to the stderr it found at import)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {h for logger in loggers if isinstance(logger, logging.Logger) for h in logger.handlers}
    return [h for h in handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
