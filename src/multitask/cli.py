"""The ``multitask`` command (also ``python -m multitask``).

Subcommands::

    multitask ps [--json] [--tree] [--pid PID]    every running multitask program, its pools and
                                                  workers, with their OS state (like `ps aux`)
    multitask ps --stacks [--pid PID]             every thread's Python stack in each of those
                                                  processes, for a bug report (_core/_stacks.py)
    multitask top [--pid PID] [--interval S]      the same, live; q quits
    multitask demo [ARGS...]                      a guided demo (multitask._demo)
    multitask bench [ARGS...]                     the benchmark suite (benchmarks/run.py)

``ps`` and ``top`` read the per-user registry every multitask program publishes to (see
:mod:`multitask.monitor.registry`); they only see programs of the same user.  ``ps --json`` prints a
list of objects, one per process, with at least ``pid``, ``ppid``, ``state`` (the ``ps`` STAT
letters), ``role`` (``main``/``worker``/``process``...) and, for pool workers, ``pool``,
``task_state`` (``idle``/``busy``...), ``task``, ``task_running_for``, ``tasks_done``,
``tasks_failed``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

    from .monitor.view import ProgramView, Row

__all__ = ["main"]


def _console() -> Console:
    from rich.console import Console

    # Piped output has no terminal width; a table squeezed into 80 columns is unreadable.
    width = shutil.get_terminal_size((160, 24)).columns
    return Console(width=max(width, 100) if not sys.stdout.isatty() else None)


def _views(pid: int | None) -> list[ProgramView]:
    from .monitor import registry, view

    entries = registry.read_all()
    if pid is not None:
        entries = [e for e in entries if e.pid == pid]
    return view.build(entries)


# ------------------------------------------------------------------------------------------------
# ps

def _state_style(state: str) -> str:
    return {"R": "bold green", "D": "bold red", "T": "yellow", "t": "yellow",
            "Z": "bold magenta", "X": "dim"}.get(state[:1], "")


def _ps_table(views: list[ProgramView]) -> Table:
    from rich.table import Table
    from rich.text import Text

    from .monitor.view import human_bytes, human_seconds

    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for col, justify in (("PID", "right"), ("PPID", "right"), ("ROLE", "left"),
                         ("STAT", "left"), ("%CPU", "right"), ("RSS", "right"),
                         ("NI", "right"), ("TASK", "left"), ("CURRENT TASK", "left"),
                         ("TIME", "right"), ("DONE", "right"), ("FAIL", "right"),
                         ("COMMAND", "left")):
        table.add_column(col, justify=justify,  # type: ignore[arg-type]
                         no_wrap=col != "COMMAND", overflow="ellipsis")

    def cells(row: Row, role: str) -> list[str | Text]:
        return [str(row.pid), str(row.ppid) if row.ppid is not None else "-", role,
                Text(row.state, style=_state_style(row.state)),
                "-" if row.cpu_percent is None else f"{row.cpu_percent:.1f}",
                human_bytes(row.rss), "-" if row.nice is None else str(row.nice)]

    for v in views:
        m = v.main
        table.add_row(*cells(m, "main"), "", "", "", "", "",
                      Text(f"{m.name}  [{m.cpu_count} CPUs]", style="bold"))
        for pool in v.pools:
            s = pool.stats
            table.add_row("", "", Text(f"pool {s.name}", style="cyan"), "", "", "", "", s.state,
                          f"{s.running} running, {s.queued} queued", "",
                          str(s.completed), str(s.failed),
                          Text(f"{s.backend}, {s.processes} workers, "
                               f"{s.workers_replaced} replaced", style="dim"))
            for w in pool.workers:
                task = w.task or ""
                if w.task_items and w.task_items > 1:
                    task += f" x{w.task_items}"
                table.add_row(*cells(w, f"  worker {w.worker}"),
                              Text(w.task_state or "",
                                   style="green" if w.task_state == "busy" else "dim"),
                              task, human_seconds(w.task_running_for), str(w.tasks_done),
                              str(w.tasks_failed), Text(w.command, style="dim"))
        for p in v.processes:
            table.add_row(*cells(p, p.role), "", "", "", "", "", f"{p.name}  {p.command}")
    return table


def _tree_label(pid: int, row: Row | None) -> Text:
    from rich.text import Text

    from .monitor.procinfo import proc_info
    from .monitor.view import human_seconds

    info = proc_info(pid)
    state = info.state if info else "X"
    text = Text()
    text.append(f"{pid} ", style="bold")
    text.append(state, style=_state_style(state))
    text.append(f" {info.name if info else '?'}")
    if row is not None:
        if row.role == "worker":
            text.append(f"  worker {row.worker} of pool {row.pool}", style="cyan")
            if row.task_state == "busy" and row.task:
                text.append(f"  busy: {row.task} {human_seconds(row.task_running_for)}",
                            style="green")
            elif row.task_state:
                text.append(f"  {row.task_state}", style="dim")
        elif row.role == "main":
            text.append(f"  main: {row.name}", style="cyan")
        else:
            text.append(f"  {row.role} {row.name}", style="cyan")
    elif info is not None:
        text.append(f"  {info.command[:60]}", style="dim")
    return text


def _tree_add(node: Tree, pid: int, known: dict[int, Row], depth: int = 0) -> None:
    import psutil

    try:
        children = sorted(psutil.Process(pid).children(), key=lambda c: c.pid)
    except psutil.Error:
        return
    for child in children:
        sub = node.add(_tree_label(child.pid, known.get(child.pid)))
        if depth < 32:
            _tree_add(sub, child.pid, known, depth + 1)


def _ps_tree(views: list[ProgramView]) -> Tree:
    """The real parent/child tree of each program (like `pstree -p`), annotated from the
    registry: a worker forked by a zygote shows under the zygote, not under the program."""
    import psutil
    from rich.text import Text
    from rich.tree import Tree

    root = Tree("multitask programs", guide_style="dim")
    for v in views:
        known = {r.pid: r for r in v.rows()}
        top = root.add(_tree_label(v.entry.pid, known.get(v.entry.pid)))
        _tree_add(top, v.entry.pid, known)
        # Registered processes that are not descendants (re-parented orphans) still show.
        try:
            descendants = {p.pid for p in psutil.Process(v.entry.pid).children(recursive=True)}
        except psutil.Error:
            descendants = set()
        for row in v.rows():
            if row.pid != v.entry.pid and row.pid not in descendants:
                top.add(Text.assemble(_tree_label(row.pid, row),
                                      ("  (not a descendant)", "yellow")))
    return root


def _stack_of(pid: int) -> str:
    from ._core import _stacks

    try:
        dump = _stacks.request(pid)
    except PermissionError:
        return "(not allowed: a process of another user)\n"
    if dump is None:
        return "(no stack dump: not a multitask process, MULTITASK_STACKS=0, or it exited)\n"
    return dump or "(no answer within 3 s: the process may be stopped, or SIGUSR2 blocked)\n"


def _row_title(row: Row) -> str:
    if row.role == "worker":
        title = f"worker {row.worker} of pool {row.pool}"
        if row.task_state == "busy" and row.task:
            title += f", busy: {row.task} for {row.task_running_for or 0:.1f} s"
        elif row.task_state:
            title += f", {row.task_state}"
        return title
    return f"{row.role} {row.name}"


def cmd_stacks(args: argparse.Namespace) -> int:
    """``ps --stacks``: every thread's Python stack in each process of each program (in the
    program, its workers, its zygotes and plain processes), or in just ``--pid PID``'s."""
    import psutil

    from .monitor.view import flatten

    views = _views(args.pid)
    targets: list[tuple[int, str]] = []
    for v in views:
        rows = {r.pid: r for r in flatten([v])}
        try:   # zygotes and other helpers are descendants without a row of their own
            kids = [c.pid for c in psutil.Process(v.entry.pid).children(recursive=True)]
        except psutil.Error:
            kids = []
        for pid in dict.fromkeys([v.entry.pid, *rows, *kids]):
            row = rows.get(pid)
            targets.append((pid, _row_title(row) if row is not None else "child process"))
    if not targets and args.pid is not None:
        # not (yet) in the registry, or a worker's pid: that process and its descendants
        try:
            kids = [c.pid for c in psutil.Process(args.pid).children(recursive=True)]
        except psutil.Error:
            kids = []
        targets = [(args.pid, "process"), *((k, "child process") for k in kids)]
    if args.json:
        json.dump([{"pid": pid, "title": title, "stacks": _stack_of(pid)}
                   for pid, title in targets], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if not targets:
        print("no running multitask programs")
    for pid, title in targets:
        sys.stdout.write(f"=== pid {pid}: {title} ===\n{_stack_of(pid)}\n")
    sys.stdout.flush()
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    from .monitor.view import flatten

    if args.stacks:
        return cmd_stacks(args)
    views = _views(args.pid)
    if args.json:
        json.dump([row.as_dict() for row in flatten(views)], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    console = _console()
    if not views:
        console.print("no running multitask programs" +
                      (f" with pid {args.pid}" if args.pid is not None else ""))
        return 0
    console.print(_ps_tree(views) if args.tree else _ps_table(views))
    return 0


# ------------------------------------------------------------------------------------------------
# top, demo, bench

def cmd_top(args: argparse.Namespace) -> int:
    from .monitor.top import run_top

    return run_top(pid=args.pid, interval=args.interval)


def cmd_demo(args: argparse.Namespace) -> int:
    import importlib

    try:
        demo = importlib.import_module("multitask._demo")
    except ModuleNotFoundError as exc:
        if exc.name != "multitask._demo":
            raise
        print("multitask demo: the demo module (multitask._demo) is not part of this "
              "installation yet.", file=sys.stderr)
        return 1
    result = demo.main(list(args.rest))
    return int(result or 0)


def find_bench_script() -> Path | None:
    """``benchmarks/run.py`` of the source checkout this package runs from, if there is one."""
    here = Path(__file__).resolve().parent          # .../src/multitask
    for root in (here.parent.parent, here.parent):  # src layout, then flat layout
        script = root / "benchmarks" / "run.py"
        if script.is_file():
            return script
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    script = find_bench_script()
    if script is None:
        print("multitask bench: the benchmarks are not installed with the package; run it from "
              "a source checkout (git clone, then `make bench`).", file=sys.stderr)
        return 1
    return subprocess.call([sys.executable, str(script), *args.rest], cwd=script.parent.parent)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multitask", description="Watch multitask programs, run the demo or the benchmarks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ps = sub.add_parser("ps", help="list running multitask programs, pools and workers",
                        description="List running multitask programs of this user, their pools "
                                    "and workers, with the OS state of each process.")
    ps.add_argument("--json", action="store_true", help="print a JSON list, one object a process")
    ps.add_argument("--tree", action="store_true", help="show the process tree (like pstree)")
    ps.add_argument("--pid", type=int, help="only the program with this pid")
    ps.add_argument("--stacks", action="store_true",
                    help="print every thread's Python stack in each process (for bug reports)")
    ps.set_defaults(func=cmd_ps)

    top = sub.add_parser("top", help="live view of pools and workers (q quits)",
                         description="Live view of running multitask programs; press q to quit. "
                                     "With --pid, exits when that program ends.")
    top.add_argument("--pid", type=int, help="watch only this program; exit when it ends")
    top.add_argument("--interval", type=float, default=0.5, help="seconds between refreshes")
    top.set_defaults(func=cmd_top)

    # demo and bench pass every further argument through (see main()).
    demo = sub.add_parser("demo", help="run the guided demo (arguments are passed on)")
    demo.set_defaults(func=cmd_demo, passthrough=True)

    bench = sub.add_parser("bench", help="run the benchmark suite (source checkout only; "
                                         "arguments are passed on)")
    bench.set_defaults(func=cmd_bench, passthrough=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multitask`` console script; returns the exit status."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if getattr(args, "interval", 1.0) <= 0:
        parser.error("--interval must be positive")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `multitask ps | head`: the reader went away; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
