"""Serve an emulated instrument over a raw SCPI socket (the "port 5025" style).

One model, several clients; the commands of one client run at a time (a lock).
Faults on demand, through the same socket:

* ``DIAGnostic:FAULt:HANG <s>``: answer nothing, to anyone, for s seconds; what was sent
  meanwhile is processed afterwards.
* ``DIAGnostic:FAULt:DROP``: close this connection right after this line.
* ``DIAGnostic:FAULt:DELay <s>``: answer every query s seconds late until cleared
  (``DELay 0`` or ``CLEar``); a command arriving before the late answer is sent
  interrupts it: the answer is dropped and -410 "Query INTERRUPTED" queued.
* ``DIAGnostic:FAULt:ERRor <code>``: push that code into the error queue.
* ``DIAGnostic:FAULt:CLEar``: clear the delay (and a pending hang).

CLI::

    python -m bench.instruments.emulators.server --kind power-supply|optical-attenuator \\
        --channels N [--host 127.0.0.1] [--port 0] [--serial S] [--on-change-cmd CMD]

prints ``READY <port>`` once listening, stops on SIGTERM/SIGINT. ``--on-change-cmd`` is a
shell command template run on each channel state change (in order, one at a time), with
``{channel}``, the state keys and ``{link_state}`` (up|down) and ``{power}`` (on|off).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import TracebackType

from bench.instruments.emulators.attenuator import OpticalAttenuator
from bench.instruments.emulators.power_supply import PowerSupply
from bench.instruments.emulators.scpi import SCPIInstrument, Session, State

log = logging.getLogger(__name__)

KINDS: dict[str, type[SCPIInstrument]] = {
    "power-supply": PowerSupply,
    "optical-attenuator": OpticalAttenuator,
}
MAX_LINE = 64 * 1024


class _Connections:
    """What a server shares between its clients: the lock and the open writers."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()


async def _handle(
    model: SCPIInstrument,
    shared: _Connections,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    shared.writers.add(writer)
    session = Session()
    pending: asyncio.Task[bytes] | None = None
    try:
        while not session.drop:
            task = pending if pending is not None else asyncio.ensure_future(reader.readline())
            pending = None
            try:
                raw = await task
            except (ValueError, asyncio.LimitOverrunError):
                log.warning("line longer than %d bytes: closing the connection", MAX_LINE)
                break
            if not raw:
                break
            line = raw.decode("utf-8", errors="replace")
            async with shared.lock:
                answer = model.execute(line, session)
                if session.hang > 0:
                    hang, session.hang = session.hang, 0.0
                    await asyncio.sleep(hang)
            if answer is None:
                continue
            if model.faults.delay > 0:
                following = asyncio.ensure_future(reader.readline())
                done, _ = await asyncio.wait({following}, timeout=model.faults.delay)
                pending = following
                if following in done:
                    model.push_error(-410)
                    continue
            writer.write(answer.encode() + b"\n")
            await writer.drain()
    except (ConnectionError, OSError) as exc:
        log.debug("client connection ended: %s", exc)
    finally:
        if pending is not None:
            pending.cancel()
        shared.writers.discard(writer)
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def serve(model: SCPIInstrument, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Start serving ``model``; the port is ``server.sockets[0].getsockname()[1]``.

    ``server.close()`` stops listening; :func:`close_server` also closes open connections.
    """
    shared = _Connections()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            shared.tasks.add(task)
        try:
            await _handle(model, shared, reader, writer)
        except asyncio.CancelledError:
            # Server shutdown (close_server): the connection is closed, nothing to report.
            # Swallowed so that asyncio's stream callback does not log it as an error.
            pass
        finally:
            if task is not None:
                shared.tasks.discard(task)

    server = await asyncio.start_server(handler, host, port, limit=MAX_LINE)
    server._npa_shared = shared  # type: ignore[attr-defined]
    return server


def server_port(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


async def close_server(server: asyncio.Server) -> None:
    """Stop listening and close every client connection."""
    server.close()
    shared: _Connections | None = getattr(server, "_npa_shared", None)
    if shared is not None:
        for writer in list(shared.writers):
            writer.close()
        tasks = list(shared.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await server.wait_closed()


class EmulatorThread:
    """Serve a model from an event loop in a background thread (for tests)::

    with EmulatorThread(PowerSupply(3)) as emu:
        visa_address = f"TCPIP0::127.0.0.1::{emu.port}::SOCKET"

    ``on_change`` callbacks of the model run in that thread.
    """

    def __init__(self, model: SCPIInstrument, host: str = "127.0.0.1", port: int = 0) -> None:
        self.model = model
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> EmulatorThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            serve(self.model, self.host, self.port), self._loop
        )
        self._server = future.result(timeout=10)
        self.port = server_port(self._server)
        return self

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            asyncio.run_coroutine_threadsafe(close_server(server), self._loop).result(timeout=10)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# State-change commands


def command_fields(channel: int, state: State) -> dict[str, str]:
    """The substitutions of ``--on-change-cmd``: channel, the state keys, link_state, power."""
    fields: dict[str, str] = {"channel": str(channel)}
    for key, value in state.items():
        fields[key] = ("1" if value else "0") if isinstance(value, bool) else f"{value:g}"
    on = bool(state.get("light", state.get("powered", False)))
    fields["link_state"] = "up" if on else "down"
    fields["power"] = "on" if on else "off"
    return fields


class ChangeCommandRunner:
    """Runs a shell command template for each state change, in order, one at a time."""

    def __init__(self, template: str) -> None:
        self.template = template
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def __call__(self, channel: int, state: State) -> None:
        try:
            command = self.template.format_map(command_fields(channel, state))
        except (KeyError, IndexError, ValueError) as exc:
            log.error("--on-change-cmd template %r: %s", self.template, exc)  # noqa: TRY400
            return
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())
        self._queue.put_nowait(command)

    async def _run(self) -> None:
        while (command := await self._queue.get()) is not None:
            try:
                proc = await asyncio.create_subprocess_shell(
                    command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
                )
                output, _ = await proc.communicate()
            except OSError as exc:
                log.error("on-change command %r: %s", command, exc)  # noqa: TRY400
                continue
            text = output.decode(errors="replace").rstrip()
            log.info(
                "on-change: %s -> exit %s%s", command, proc.returncode, f"\n{text}" * bool(text)
            )

    async def drain(self, timeout: float = 5.0) -> None:
        """Let queued commands finish (bounded), then stop the worker."""
        if self._worker is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._worker, timeout)
        except TimeoutError:
            log.warning("on-change commands still running at shutdown: abandoned")


# ---------------------------------------------------------------------------
# CLI


def build_model(kind: str, channels: int, serial: str) -> SCPIInstrument:
    return KINDS[kind](channels=channels, serial=serial)


async def _main(args: argparse.Namespace) -> None:
    model = build_model(args.kind, args.channels, args.serial)
    if args.setup:
        # The state the lab is in when the bench takes over (a supply already feeding
        # its boards): applied before serving, and taken as published, so no wiring runs.
        model.execute(args.setup)
        errors = model.execute("SYST:ERR?")
        if errors and not errors.startswith("0,"):
            raise SystemExit(f"--setup {args.setup!r}: {errors}")
        model.settle()
    runner = ChangeCommandRunner(args.on_change_cmd) if args.on_change_cmd else None
    if runner is not None:
        model.on_change = runner
    server = await serve(model, args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {server_port(server)}", flush=True)
    log.info("%s serving on %s:%d", model.idn, args.host, server_port(server))
    await stop.wait()
    await close_server(server)
    if runner is not None:
        await runner.drain()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instruments.emulators.server",
        description="Serve an emulated SCPI instrument on a raw TCP socket.",
    )
    parser.add_argument("--kind", required=True, choices=sorted(KINDS))
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--serial", default="0001")
    parser.add_argument(
        "--on-change-cmd",
        default=None,
        help="shell command run on each state change; {channel}, {link_state}, {power}, ...",
    )
    parser.add_argument(
        "--setup",
        default="",
        help="SCPI commands applied at start without running --on-change-cmd "
        "(e.g. 'VOLT 12,(@1);OUTP ON,(@1)': the state the lab starts in)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.channels is None:
        args.channels = 3 if args.kind == "power-supply" else 4
    if args.channels < 1:
        parser.error("--channels must be at least 1")
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
